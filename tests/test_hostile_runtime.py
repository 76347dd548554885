"""Runs that die, collide or resume: nothing half-written, no run left dangling, resume exact.

Real Prefect server, real plates on disk, real processes killed with SIGKILL, real full and
read-only filesystems (tmpfs mounts; those tests need root and are skipped otherwise). Each test
is a row of docs/bad-input.md.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from prefect_hcs.formats.omezarr import OmeZarrPlateWriter, read_well_image
from prefect_hcs.formats.validate_zarr import validate_plate
from prefect_hcs.runtime.lease import (
    LEASE_NAME,
    LeaseHeldError,
    LeaseInfo,
    OutputLease,
    read_lease,
)
from prefect_hcs.testing.synthetic import make_plate

pytestmark = pytest.mark.server

_RUNNER = """
import sys
from prefect_hcs.runtime.flow import process_plate
process_plate(plate=sys.argv[1], global_config=sys.argv[2])
"""
PROJECT_ONLY = {
    "name": "project-only",
    "steps": [{"name": "project", "func": "max_projection", "variable_components": ["z"]}],
}
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs (full / read-only disk) needs root"
)


def _plate(tmp: Path, name: str, wells: list[str], size: int = 256, seed: int = 3) -> Path:
    plate = tmp / name
    make_plate(
        str(plate), format="imagexpress", wells=wells, sites=4, channels=2, z=3, size=size,
        seed=seed,
    )  # fmt: skip
    return plate


def _config(tmp: Path, out: Path, extra: str = "", name: str = "g.yaml") -> Path:
    cfg = tmp / name
    cfg.write_text(
        f"num_workers: 1\npath_planning_config: {{global_output_folder: {out}}}\n{extra}"
    )
    return cfg


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("prefect-hcs")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=400, env=dict(os.environ),
        cwd=cwd,
    )  # fmt: skip


def _flow_run(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _unfinished_task_runs(run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )
    return [r for r in runs if r.state is None or not r.state.is_final()]


def _delete_runs(*run_ids) -> None:
    """Failed runs a test made on purpose must not be retried by later `retry-failed` tests."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            client.delete_flow_run(run_id)


def _start_run(plate: str, cfg: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _RUNNER, plate, cfg], cwd=cwd, env=dict(os.environ),
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _kill_after_wells(proc: subprocess.Popen, done_dir: Path, n: int) -> list[str]:
    """SIGKILL the run's process group once `n` wells completed; return the completed wells."""
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if done_dir.exists() and len(list(done_dir.glob("*.json"))) >= n:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("no well completed within the time limit")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    return sorted(p.stem for p in done_dir.glob("*.json"))


@contextmanager
def _tmpfs(path: Path, size: str, *options: str):
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size}", *options])
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------ Build 4: writes


@needs_root
def test_disk_full_leaves_no_half_written_field_and_the_retry_completes(prefect_server, tmp_path):
    from prefect_hcs.runtime.flow import process_plate

    wells = ["A01", "A02", "A03", "A04", "A05", "A06"]
    plate = _plate(tmp_path, "Full", wells)
    out = tmp_path / "small-disk"
    # uncompressed: 4 fields x 2 channels x 256^2 x uint16 = 1 MiB per well; the disk takes ~2
    cfg = _config(tmp_path, out, "zarr_config: {compressor: none}\n")
    with _tmpfs(out, "2500k"):
        state = process_plate(
            plate=str(plate), pipeline=PROJECT_ONLY, global_config=str(cfg), return_state=True
        )
        assert state.is_failed()
        msg = str(state.result(raise_on_failure=False))
        assert "No space left on device" in msg and "cannot write" in msg, msg
        assert "free space on that filesystem" in msg and "[Errno 28]" not in msg, msg
        root = out / "Full_hcs"
        zarr_root = root / "Full.ome.zarr"
        done = {p.stem for p in (root / ".hcs-done").glob("*.json")}
        assert 1 <= len(done) < len(wells), done
        writer = OmeZarrPlateWriter(str(zarr_root))
        for w in wells:
            well_dir = zarr_root / w[0] / str(int(w[1:]))
            fields = sorted(p.name for p in well_dir.iterdir() if p.is_dir())
            if w in done:  # complete wells are whole
                assert fields == ["0", "1", "2", "3"], (w, fields)
                assert all(writer.field_complete(w, f, check_chunks=True) for f in range(4))
            else:  # failed wells left nothing: no chunk files without metadata
                assert fields == [], (w, fields)
        assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
        assert not (root / LEASE_NAME).exists()  # the failed run gave its lease back

        subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
        retry = process_plate(
            plate=str(plate), pipeline=PROJECT_ONLY, global_config=str(cfg), return_state=True
        )
        assert retry.is_completed(), retry.message
        assert retry.result()["wells_skipped"] == sorted(done)
        assert validate_plate(str(zarr_root)) == []
    _delete_runs(state.state_details.flow_run_id)


@needs_root
def test_read_only_output_is_one_clear_error_and_the_outputs_are_untouched(
    prefect_server, tmp_path
):
    from prefect_hcs.runtime.flow import process_plate

    plate = _plate(tmp_path, "Ro", ["A01", "A02"], size=128)
    out = tmp_path / "ro-disk"
    cfg = _config(tmp_path, out)
    with _tmpfs(out, "16m"):
        assert process_plate(
            plate=str(plate), pipeline=PROJECT_ONLY, global_config=str(cfg), return_state=True
        ).is_completed()
        before = _files(out)
        subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        changed = {
            **PROJECT_ONLY,
            "steps": [{**PROJECT_ONLY["steps"][0], "func": "mean_projection"}],
        }
        state = process_plate(
            plate=str(plate), pipeline=changed, global_config=str(cfg), return_state=True
        )
        assert state.is_failed()
        msg = str(state.result(raise_on_failure=False))
        assert msg.startswith(f"cannot write {out}/Ro_hcs/"), msg
        assert "Read-only file system" in msg and "make the output folder writable" in msg
        assert "Traceback" not in msg and "\n" not in msg
        assert _files(out) == before  # nothing written, nothing removed
    _delete_runs(state.state_details.flow_run_id)


# ------------------------------------------------------------------------------ Build 5: lease


def test_a_second_run_into_the_same_output_is_refused_and_the_first_completes(
    prefect_server, tmp_path
):
    from prefect_hcs.runtime.flow import process_plate

    wells = [f"{r}{c:02d}" for r in "AB" for c in range(1, 7)]
    plate = _plate(tmp_path, "Busy", wells)
    out = tmp_path / "out"
    cfg = _config(tmp_path, out)
    lease_file = out / "Busy_hcs" / LEASE_NAME
    first = _start_run(str(plate), str(cfg), tmp_path)
    deadline = time.monotonic() + 120
    while not lease_file.exists():
        assert first.poll() is None and time.monotonic() < deadline, "first run never leased"
        time.sleep(0.05)
    owner = read_lease(str(lease_file))
    assert owner is not None and owner.pid == first.pid

    second = process_plate(plate=str(plate), global_config=str(cfg), return_state=True)
    assert second.is_failed()
    msg = str(second.result(raise_on_failure=False))
    assert "is being written by flow run 'plate-Busy'" in msg, msg
    assert owner.run_id in msg and "a second run into it is refused" in msg
    assert "prefect flow-run cancel" in msg
    assert first.poll() is None, "the refused run must not have disturbed the first"

    assert first.wait(300) == 0
    assert _flow_run(owner.run_id).state.is_completed()
    root = out / "Busy_hcs"
    assert sorted(p.stem for p in (root / ".hcs-done").glob("*.json")) == wells
    assert validate_plate(str(root / "Busy.ome.zarr")) == []
    assert not lease_file.exists()
    _delete_runs(second.state_details.flow_run_id)


def test_the_lease_of_a_sigkilled_run_is_taken_over_and_that_run_marked_crashed(
    prefect_server, tmp_path
):
    from prefect_hcs.runtime.flow import process_plate

    wells = ["A01", "A02", "A03", "A04", "A05", "A06"]
    plate = _plate(tmp_path, "Dead", wells)
    out = tmp_path / "out"
    cfg = _config(tmp_path, out)
    root = out / "Dead_hcs"
    proc = _start_run(str(plate), str(cfg), tmp_path)
    done_before = _kill_after_wells(proc, root / ".hcs-done", 1)
    stale = read_lease(str(root / LEASE_NAME))
    assert stale is not None and stale.pid == proc.pid
    assert _flow_run(stale.run_id).state.is_running()  # what Prefect alone would leave forever

    state = process_plate(plate=str(plate), global_config=str(cfg), return_state=True)
    assert state.is_completed(), state.message
    assert set(done_before) <= set(state.result()["wells_skipped"])
    dead = _flow_run(stale.run_id)
    assert dead.state.is_crashed(), dead.state
    assert f"pid {proc.pid}" in dead.state.message and "is gone" in dead.state.message
    assert _unfinished_task_runs(stale.run_id) == []
    assert validate_plate(str(root / "Dead.ome.zarr")) == []
    assert not (root / LEASE_NAME).exists()
    _delete_runs(stale.run_id)


def test_a_lease_with_an_expired_heartbeat_on_another_host_is_taken_over(tmp_path):
    root = tmp_path / "P_hcs"
    now = time.time()
    remote = LeaseInfo(
        "run-elsewhere", "plate-P", "other-host", 4242, None, now - 900, now - 600, 120
    )
    root.mkdir()
    (root / LEASE_NAME).write_bytes(remote.to_bytes())
    live = LeaseInfo("run-live", "plate-P", "other-host", 4242, None, now, now, 120)

    mine = OutputLease(str(root), LeaseInfo.for_this_process("run-new", "plate-P"))
    takeover = mine.acquire()
    assert takeover is not None and takeover.previous == remote
    assert "last heartbeat was 600 s ago" in takeover.reason
    assert read_lease(str(root / LEASE_NAME)).run_id == "run-new"

    (root / LEASE_NAME).write_bytes(live.to_bytes())  # a live run elsewhere is never taken over
    with pytest.raises(LeaseHeldError, match="is being written by flow run 'plate-P' .run-live."):
        OutputLease(str(root), LeaseInfo.for_this_process("run-3", "plate-P")).acquire()
    assert read_lease(str(root / LEASE_NAME)) == live
    mine.release()  # not ours any more: left alone
    assert read_lease(str(root / LEASE_NAME)) == live


def test_the_lease_is_exclusive_on_fsspec_filesystems_and_its_heartbeat_notices_a_takeover():
    root = "memory://hostile-runtime/P_hcs"
    first = OutputLease(root, LeaseInfo.for_this_process("run-a", "plate-P"))
    assert first.acquire() is None  # created with pipe_file(mode="create")
    with pytest.raises(LeaseHeldError, match="'plate-P' .run-a."):
        OutputLease(root, LeaseInfo.for_this_process("run-b", "plate-P")).acquire()
    stamped = read_lease(first.url).heartbeat
    time.sleep(0.01)
    first.beat()
    assert read_lease(first.url).heartbeat > stamped and first.lost is None
    other = LeaseInfo.for_this_process("run-c", "plate-P")
    import fsspec

    fsspec.filesystem("memory").pipe_file(first.url.removeprefix("memory://"), other.to_bytes())
    first.beat()  # someone else holds it now: stop, do not overwrite
    assert first.lost and "lost its lease" in first.lost
    assert read_lease(first.url) == other
    first.release()
    assert read_lease(first.url) == other


# --------------------------------------------------------------------- Build 6: dead runs, retry


def test_retry_failed_finds_a_sigkilled_running_run_and_reruns_it_from_another_directory(
    prefect_server, tmp_path
):
    since = datetime.now(UTC).isoformat()
    wells = ["A01", "A02", "A03", "A04", "A05", "A06"]
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    _plate(here, "Gone", wells)
    _config(here, here / "out", name="g.yaml")
    root = here / "out" / "Gone_hcs"
    proc = _start_run("Gone", "g.yaml", here)  # relative paths, as a user types them
    done_before = _kill_after_wells(proc, root / ".hcs-done", 1)
    run_id = read_lease(str(root / LEASE_NAME)).run_id
    assert _flow_run(run_id).state.is_running()

    listed = _cli("retry-failed", "--since", since, "--dry-run", cwd=elsewhere)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"would mark plate-Gone ({run_id}) Crashed" in listed.stdout
    assert str(here / "Gone") in listed.stdout  # the absolute path recorded by the run
    assert _flow_run(run_id).state.is_running()  # a dry run changes nothing

    out = _cli("retry-failed", "--since", since, cwd=elsewhere)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"marked plate-Gone ({run_id}) Crashed: its process (pid {proc.pid}" in out.stdout
    assert "rerun plate-Gone" in out.stdout and "COMPLETED" in out.stdout
    dead = _flow_run(run_id)
    assert dead.state.is_crashed() and _unfinished_task_runs(run_id) == []
    assert sorted(p.stem for p in (root / ".hcs-done").glob("*.json")) == wells
    assert validate_plate(str(root / "Gone.ome.zarr")) == []
    assert len(done_before) >= 1 and not (elsewhere / "out").exists()


def test_retry_failed_exits_non_zero_when_a_retry_fails(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime
    from prefect.client.schemas.sorting import FlowRunSort

    from prefect_hcs.runtime.flow import process_plate

    since = datetime.now(UTC).isoformat()
    plate = _plate(tmp_path, "Broken", ["A01", "A02"], size=128)
    victim = sorted(plate.rglob("*_A02_s1_w1*.tif"))[0]
    victim.write_bytes(victim.read_bytes()[:120])
    assert process_plate(plate=str(plate), return_state=True).is_failed()

    out = _cli("retry-failed", "--since", since)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "rerun plate-Broken" in out.stdout and "FAILED" in out.stdout
    assert "1 retried plate run(s) did not complete" in out.stderr
    with get_client(sync_client=True) as client:
        mine = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),
            sort=FlowRunSort.START_TIME_DESC,
            limit=200,
        )
    _delete_runs(*[r.id for r in mine])


# ------------------------------------------------------------------------ Build 7: exact resume


def test_a_plane_replaced_while_it_is_read_is_not_accepted_on_resume(
    prefect_server, tmp_path, monkeypatch
):
    from prefect_hcs.runtime import io as hio
    from prefect_hcs.runtime.flow import process_plate

    wells = ["A01", "A02"]
    plate = _plate(tmp_path, "Race", wells, size=128, seed=4)
    newer = _plate(tmp_path / "v2", "Race", wells, size=128, seed=5)
    victim = sorted(plate.rglob("*_A02_s2_w1*.tif"))[0]
    replacement = sorted(newer.rglob("*_A02_s2_w1*.tif"))[0]
    # the reference: the plate as it is after the replacement, processed cleanly
    clean_plate = tmp_path / "clean" / "Race"
    shutil.copytree(plate, clean_plate)
    shutil.copyfile(replacement, clean_plate / victim.relative_to(plate))
    assert process_plate(plate=str(clean_plate), return_state=True).is_completed()

    real_read = hio.read_source_plane
    swapped: list[str] = []

    def read_then_replace(url, *args, **kwargs):
        pixels = real_read(url, *args, **kwargs)
        if url.endswith(victim.name) and not swapped:  # a copy job replaces the file just now
            shutil.copyfile(replacement, victim)
            os.utime(victim, ns=(time.time_ns() + 10**9,) * 2)
            swapped.append(url)
        return pixels

    monkeypatch.setattr(hio, "read_source_plane", read_then_replace)  # in this process:
    threads = tmp_path / "threads.yaml"  # the wells must run in it, not in worker processes
    threads.write_text("execution_config: {task_runner: threads}\n")
    assert process_plate(
        plate=str(plate), global_config=str(threads), return_state=True
    ).is_completed()
    assert swapped
    monkeypatch.setattr(hio, "read_source_plane", real_read)
    again = process_plate(plate=str(plate), return_state=True)
    assert again.is_completed()
    got = read_well_image(str(tmp_path / "Race_hcs" / "Race.ome.zarr"), "A02", 0)
    want = read_well_image(str(tmp_path / "clean" / "Race_hcs" / "Race.ome.zarr"), "A02", 0)
    np.testing.assert_array_equal(got, want)  # the stale read was never accepted


_FUNCS = '''
import numpy as np
from prefect_hcs.processing.registry import register


@register("hr_scale", variable_components=("site",))
def hr_scale(stack: np.ndarray, factor: int = 2) -> np.ndarray:
    """Multiply (a test function whose code the test changes between runs)."""
    return stack.astype(np.float32) * factor{extra}
'''


def _pipeline(factor: int, wells: str) -> dict:
    return {
        "name": "scaled",
        "steps": [
            {"name": "project", "func": "max_projection", "variable_components": ["z"]},
            {
                "name": "scale",
                "func": {"name": "hr_scale", "kwargs": {"factor": factor}},
                "config": {"step_well_filter_config": {"well_filter": wells}},
            },
        ],
    }


def test_each_change_between_runs_recomputes_exactly_the_affected_wells(
    prefect_server, tmp_path, monkeypatch
):
    from prefect_hcs.runtime.flow import process_plate

    wells = ["A01", "A02", "A03", "A04"]
    plate = _plate(tmp_path, "Change", wells, size=64, seed=8)
    module = tmp_path / "hr_funcs.py"
    module.write_text(_FUNCS.format(extra=""))
    monkeypatch.syspath_prepend(str(tmp_path))
    funcs = importlib.import_module("hr_funcs")
    cfg = tmp_path / "g.yaml"
    cfg.write_text("num_workers: 1\n")
    zarr_root = str(tmp_path / "Change_hcs" / "Change.ome.zarr")

    def run(pipeline: dict) -> list[str]:
        state = process_plate(
            plate=str(plate), pipeline=pipeline, global_config=str(cfg), return_state=True
        )
        assert state.is_completed(), state.message
        return state.result()["wells_skipped"]

    assert run(_pipeline(2, "A01,A02")) == []
    assert run(_pipeline(2, "A01,A02")) == wells  # nothing changed: nothing recomputed
    a01_x2 = read_well_image(zarr_root, "A01", 0)
    a03 = read_well_image(zarr_root, "A03", 0)
    # a function kwarg: only the wells the step runs on
    assert run(_pipeline(3, "A01,A02")) == ["A03", "A04"]
    np.testing.assert_allclose(read_well_image(zarr_root, "A01", 0), a01_x2 * 1.5)
    np.testing.assert_array_equal(read_well_image(zarr_root, "A03", 0), a03)
    # the function's code
    module.write_text(_FUNCS.format(extra=" + 1"))
    importlib.reload(funcs)
    assert run(_pipeline(3, "A01,A02")) == ["A03", "A04"]
    np.testing.assert_allclose(read_well_image(zarr_root, "A01", 0), a01_x2 * 1.5 + 1)
    # the plan: the step's well filter drops A02
    assert run(_pipeline(3, "A01")) == ["A01", "A03", "A04"]
    # a config value every well's output depends on
    cfg.write_text("num_workers: 1\nzarr_config: {compression_level: 9}\n")
    assert run(_pipeline(3, "A01")) == []
    # an input file of one well
    victim = sorted(plate.rglob("*_A03_s1_w1*.tif"))[0]
    victim.write_bytes(victim.read_bytes())
    os.utime(victim, ns=(time.time_ns() + 10**9,) * 2)
    assert run(_pipeline(3, "A01")) == ["A01", "A02", "A04"]
    marker = json.loads((tmp_path / "Change_hcs" / ".hcs-done" / "A01.json").read_text())
    assert set(marker) >= {"chain_fingerprint", "inputs", "outputs"}


def test_docs_rows_name_these_tests():
    """docs/bad-input.md's section for these cases: one row per test of this module, in order."""
    docs = (Path(__file__).parents[1] / "docs" / "bad-input.md").read_text()
    section = docs.split("\n## Runs that die, collide or resume", 1)[1].split("\n## ")[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and "---" not in r][1:]
    named = [r.rstrip(" |").rsplit("|", 1)[1].strip().strip("`") for r in rows]
    here = [
        n for n in globals() if n.startswith("test_") and n != "test_docs_rows_name_these_tests"
    ]
    assert named == here
