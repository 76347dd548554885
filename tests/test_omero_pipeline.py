"""Pipelines on OMERO plates (issue 4, items 5 and 6): the seed bug as tests, and every bad input.

The seed bug (reference/seeds/000_…): an OMERO plate run remotely got `materialized_backend='disk'`
and did `mkdir /omero/plate_403_outputs/...`. Here the same configuration (global layer says
`omero`, pipeline layer leaves `vfs_config` unset) is run in-process, from Blocks in another
process, and overridden explicitly to disk; each time we check the plans, where the files went, and
that nothing else was created. Runs use the session's real Prefect server and the OMERO stand-in.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prefect_hcs.errors import UserFacingError
from prefect_hcs.formats.detect import open_plate
from prefect_hcs.formats.wells import well_id
from prefect_hcs.pipeline.compiler import CompileError
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime.compile import compile_from_parameters
from prefect_hcs.storage.omero_errors import OmeroAuthError
from prefect_hcs.storage.omero_fs import OmeroFileSystem
from prefect_hcs.storage.omero_plate import open_omero_plate
from prefect_hcs.testing.omero_standin import DB_NAME, StandinServer, standin_host
from prefect_hcs.testing.synthetic import make_plate

WELLS = ["A01", "A02", "B01", "B02"]
STEPS = ("project", "background", "normalize", "stitch", "count")
SEED_PATH = "/omero/plate_403_outputs/checkpoints_step0"  # the path of the user's error message
PASSWORD = "c0rrect-h0rse-battery"
EXE = Path(sys.executable).with_name("prefect-hcs")


# ----------------------------------------------------------------------------------- fixtures
@dataclass
class Omero:
    """A stand-in holding one imported copy of the synthetic plate, seen as user alice."""

    server: StandinServer
    plate_id: int

    @property
    def url(self) -> str:
        return f"omero://plate_{self.plate_id}"

    @property
    def opts(self) -> dict[str, Any]:
        return {"host": standin_host(str(self.server.directory)), "user": "alice", "group": "lab"}

    def fs(self, **extra: Any) -> OmeroFileSystem:
        return OmeroFileSystem(**{**self.opts, **extra})

    def outputs(self) -> set[str]:
        """Every FileAnnotation written through the filesystem: on the plate, wells and images."""
        fs = self.fs()
        folders = [f"plate_{self.plate_id}/outputs"]
        for w in fs.plate(self.plate_id).wells:
            name = well_id(w.row, w.column)
            folders.append(f"plate_{self.plate_id}/{name}/outputs")
            folders += [
                f"plate_{self.plate_id}/{name}/s{i + 1:03d}/outputs" for i in range(len(w.images))
            ]
        return {f"omero://{p}" for folder in folders for p in fs.find(folder)}

    def faults_left(self) -> int:
        """Injected faults not yet consumed (0 proves that every injected fault struck)."""
        with closing(sqlite3.connect(self.server.directory / DB_NAME)) as db:
            return int(db.execute("SELECT COALESCE(SUM(remaining), 0) FROM faults").fetchone()[0])


@pytest.fixture(scope="module")
def disk_plate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic ImageXpress plate every test imports (made once per module)."""
    plate = tmp_path_factory.mktemp("disk") / "P"
    make_plate(
        str(plate), format="imagexpress", wells=WELLS, sites=4, channels=2, z=2, size=128, seed=11
    )
    return plate


@pytest.fixture
def omero(tmp_path: Path, disk_plate: Path) -> Omero:
    server = StandinServer.create(tmp_path / "standin")
    server.add_user("alice", group="lab")
    server.add_user("bob", group="other")
    server.add_user("carol", PASSWORD, group="lab")
    plate_id = server.import_plate_from_layout(open_plate(str(disk_plate)), group="lab")
    return Omero(server, plate_id)


def _yaml(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


SEED_GLOBAL = "vfs_config: {materialization_backend: omero}\n"
SEED_PIPELINE = "step_materialization_config: {enabled: true}\n"  # vfs_config left unset


def _run(plate: str, **params: Any) -> Any:
    from prefect_hcs.runtime.flow import process_plate

    return process_plate(plate=plate, return_state=True, **params)


def _failure(state: Any) -> str:
    assert state.is_failed(), state
    return str(state.result(raise_on_failure=False))


def _tree(root: Path) -> dict[str, tuple[bool, int, int]]:
    """{relative path: (is_dir, size, mtime)} of everything below `root`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


@contextmanager
def _no_omero_paths_appear() -> Iterator[None]:
    """Fail if a folder such as the seed's /omero/... or a plate_* folder appears in / or tmp."""
    roots = [Path("/"), Path(tempfile.gettempdir()), Path(os.environ["PREFECT_HOME"])]
    before = {r: set(os.listdir(r)) for r in roots}
    yield
    for r in roots:
        new = set(os.listdir(r)) - before[r]
        assert not [n for n in new if "omero" in n.lower() or "plate_" in n], (r, new)
    assert not Path("/omero").exists()


def _table(url: str, opts: dict[str, Any] | None = None) -> list[dict[str, str]]:
    return hio.csv_to_rows(hio.read_bytes(url, opts))


# ------------------------------------------------------------------ 1. same measurements as disk
@pytest.mark.server
def test_omero_plate_measures_the_same_as_the_disk_plate(
    prefect_server: str, omero: Omero, disk_plate: Path
) -> None:
    from prefect_hcs.formats.arrays import fit_yx
    from prefect_hcs.formats.omezarr import read_well_image

    disk = _run(str(disk_plate))
    remote = _run(omero.url, storage_options=omero.opts)
    assert disk.is_completed(), disk.message
    assert remote.is_completed(), remote.message
    d, r = disk.result(), remote.result()
    assert r["output"] == f"{omero.url}/outputs"
    assert set(r["tables"]) == set(d["tables"]) == {"count.measurements", "stitch.tile_positions"}
    for key in d["tables"]:
        assert r["tables"][key].startswith(f"{omero.url}/outputs/")
        on_disk, in_omero = _table(d["tables"][key]), _table(r["tables"][key], omero.opts)
        assert {row["well"] for row in on_disk} == set(WELLS)
        assert in_omero == on_disk, key  # same wells, same rows, same values, same order
    counts = {row["well"]: int(row["nuclei_count"]) for row in on_disk}
    assert all(n > 0 for n in counts.values()), counts

    # the final image attached to the well equals the OME-Zarr field (which is padded to a bound)
    zarr_img = read_well_image(d["output"], "A01", 0)
    tif = hio.tiff_to_array(hio.read_bytes(f"{omero.url}/A01/outputs/images/A01.tif", omero.opts))
    np.testing.assert_array_equal(fit_yx(tif[:, :, :, 0], zarr_img.shape[-2:]), zarr_img)


# ----------------------------------------------------------------- 2. the seed bug, three ways
def _assert_seed_plan(plan: Any, plate_id: int) -> None:
    assert len(plan.step_plans) == len(WELLS) * len(STEPS)
    for p in plan.step_plans:
        assert p.materialized_backend == "omero", (p.well, p.step_name, p.backend_reasons)
        assert p.materialized_output_dir == (
            f"omero://plate_{plate_id}/{p.well}/outputs/checkpoints/{p.step_name}"
        )
        assert "global layer" in p.backend_reasons["materialized_backend"]
        assert p.config["vfs_config.materialization_backend"]["source"]["layer"] == "global"


def _expected_checkpoints(plate_id: int) -> set[str]:
    return {
        f"omero://plate_{plate_id}/{w}/outputs/checkpoints/{s}/{w}.tif"
        for w in WELLS
        for s in STEPS
    }


@pytest.mark.server
def test_seed_bug_global_omero_and_unset_pipeline_vfs(
    prefect_server: str,
    omero: Omero,
    disk_plate: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = _yaml(tmp_path / "g.yaml", SEED_GLOBAL)
    p = _yaml(tmp_path / "p.yaml", SEED_PIPELINE)
    _assert_seed_plan(compile_from_parameters(omero.url, "demo", g, p, omero.opts), omero.plate_id)

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before, plate_dir = _tree(tmp_path), _tree(disk_plate.parent)
    with _no_omero_paths_appear():
        state = _run(omero.url, global_config=g, pipeline_config=p, storage_options=omero.opts)
    assert state.is_completed(), state.message

    outputs = omero.outputs()
    checkpoints = {o for o in outputs if "/outputs/checkpoints/" in o}
    assert checkpoints == _expected_checkpoints(omero.plate_id)
    first = hio.tiff_to_array(hio.read_bytes(sorted(checkpoints)[0], omero.opts))
    assert first.ndim == 6 and first.size > 0  # a real image, not an empty placeholder
    assert f"{omero.url}/outputs/count_measurements.csv" in outputs
    assert f"{omero.url}/A01/outputs/images/A01.tif" in outputs

    # nothing on local disk: only the stand-in's own database changed
    assert list(cwd.iterdir()) == []
    changed = _changed(before, _tree(tmp_path))
    assert changed and all(c == "standin" or c.startswith("standin/") for c in changed), changed
    assert _tree(disk_plate.parent) == plate_dir  # no <plate>_hcs folder next to the disk plate


_WORKER_SCRIPT = """
import json, sys
from prefect_hcs.runtime.compile import compile_from_parameters
from prefect_hcs.runtime.flow import process_plate

plate, g, p, opts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
plan = compile_from_parameters(plate, "demo", g, p, opts)
state = process_plate(
    plate=plate, global_config=g, pipeline_config=p, storage_options=opts, return_state=True
)
print("RESULT " + json.dumps({
    "backends": sorted({s.materialized_backend for s in plan.step_plans}),
    "reasons": sorted({s.backend_reasons["materialized_backend"] for s in plan.step_plans}),
    "completed": state.is_completed(),
    "message": str(state.message),
}))
"""


@pytest.mark.server
def test_seed_bug_with_config_blocks_in_another_process(
    prefect_server: str, omero: Omero, tmp_path: Path
) -> None:
    """The seed's remote execution: config crosses the process boundary as Block names only."""
    from prefect_hcs.blocks import HcsGlobalConfig, HcsPipelineConfig
    from prefect_hcs.config import load_layer

    tag = uuid.uuid4().hex[:8]
    g_name, p_name = f"omero-seed-global-{tag}", f"omero-seed-pipeline-{tag}"
    HcsGlobalConfig.from_layer(
        load_layer({"vfs_config": {"materialization_backend": "omero"}}, layer="global")
    ).save(g_name)
    HcsPipelineConfig.from_layer(
        load_layer({"step_materialization_config": {"enabled": True}}, layer="pipeline")
    ).save(p_name)
    assert HcsPipelineConfig.load(p_name).to_layer().vfs_config is None  # unset survives saving

    cwd = tmp_path / "worker-cwd"
    cwd.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", _WORKER_SCRIPT, omero.url, g_name, p_name, json.dumps(omero.opts)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert result["completed"], result["message"]
    assert result["backends"] == ["omero"]
    assert all("global layer" in r for r in result["reasons"]), result["reasons"]
    checkpoints = {o for o in omero.outputs() if "/outputs/checkpoints/" in o}
    assert checkpoints == _expected_checkpoints(omero.plate_id)
    assert list(cwd.iterdir()) == []


@pytest.mark.server
def test_explicit_disk_with_local_folder_sends_outputs_there(
    prefect_server: str, omero: Omero, tmp_path: Path
) -> None:
    from prefect_hcs.formats.validate_zarr import validate_plate

    folder = tmp_path / "results"
    g = _yaml(tmp_path / "g.yaml", SEED_GLOBAL)
    p = _yaml(
        tmp_path / "p.yaml",
        SEED_PIPELINE + f"vfs_config: {{materialization_backend: disk}}\n"
        f"path_planning_config: {{global_output_folder: '{folder}'}}\n",
    )
    plan = compile_from_parameters(omero.url, "demo", g, p, omero.opts)
    assert {s.materialized_backend for s in plan.step_plans} == {"disk"}
    assert all(
        "pipeline layer" in s.backend_reasons["materialized_backend"] for s in plan.step_plans
    )
    before = omero.server.counts()
    state = _run(omero.url, global_config=g, pipeline_config=p, storage_options=omero.opts)
    assert state.is_completed(), state.message

    root = folder / f"plate_{omero.plate_id}_hcs"
    summary = state.result()
    assert summary["output"] == str(root / f"plate_{omero.plate_id}.ome.zarr")
    assert validate_plate(summary["output"]) == []
    found = {str(f.relative_to(root)) for f in (root / "checkpoints").rglob("*.tif")}
    assert found == {f"checkpoints/{s}/{w}.tif" for w in WELLS for s in STEPS}
    assert {row["well"] for row in _table(summary["tables"]["count.measurements"])} == set(WELLS)
    assert omero.outputs() == set()  # nothing, not even a table, went to OMERO
    assert omero.server.counts() == before


# ------------------------------------------------------------------ 3. rejections at compile time
@pytest.mark.parametrize(
    ("pipeline_yaml", "needles"),
    [
        (
            "vfs_config: {materialization_backend: zarr}\n",
            ["does not scale", "global_output_folder"],
        ),
        (
            "vfs_config: {materialization_backend: disk}\n",
            ["virtual paths cannot hold files", "global_output_folder"],
        ),
        (
            f"path_planning_config: {{global_output_folder: 'omero://{SEED_PATH}'}}\n",
            [f"omero://{SEED_PATH}", "not a path of the omero:// scheme", "pipeline layer"],
        ),
        (
            "path_planning_config: {global_output_folder: 'omero://plate_999/outputs'}\n",
            ["omero://plate_999/outputs", "not an outputs area of omero://plate_"],
        ),
    ],
)
def test_backend_requests_omero_cannot_take_are_rejected(
    omero: Omero, tmp_path: Path, pipeline_yaml: str, needles: list[str]
) -> None:
    p = _yaml(tmp_path / "p.yaml", SEED_PIPELINE + pipeline_yaml)
    with pytest.raises(CompileError) as info:
        compile_from_parameters(omero.url, "demo", None, p, omero.opts)
    for needle in needles:
        assert needle in str(info.value)


def test_plan_command_says_why_omero_was_chosen(omero: Omero, tmp_path: Path) -> None:
    g = _yaml(tmp_path / "g.yaml", SEED_GLOBAL)
    args = [str(EXE), "plan", omero.url, "--storage-options", json.dumps(omero.opts), "-g", g]
    out = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plans = json.loads(out.stdout)["step_plans"]
    assert len(plans) == len(WELLS) * len(STEPS)
    for p in plans:
        assert p["materialized_backend"] == "omero"
        why = p["backend_reasons"]["materialized_backend"]
        assert "materialization_backend = omero" in why and "global layer" in why, why
    # without the global layer, auto still picks omero and says it was the default
    auto = compile_from_parameters(omero.url, "demo", None, None, omero.opts).plan("A01", 0)
    assert auto.materialized_backend == "omero"
    assert "OMERO plate" in auto.backend_reasons["materialized_backend"]
    assert "class default" in auto.backend_reasons["materialized_backend"]


# ------------------------------------------------------------------------------- 4. bad input
def _cli_plan_error(plate: str, opts: dict[str, Any]) -> str:
    out = subprocess.run(
        [str(EXE), "plan", plate, "--storage-options", json.dumps(opts), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stdout == "", (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr  # a clear message, not a stack
    return " ".join(out.stderr.split())


@pytest.mark.server
@pytest.mark.parametrize("case", ["unknown plate", "other group"])
def test_unreadable_plate_is_a_clear_error_and_writes_nothing(
    prefect_server: str, omero: Omero, case: str
) -> None:
    if case == "unknown plate":
        plate, opts, needles = "omero://plate_4242", omero.opts, ["plate 4242", "'alice'"]
    else:
        plate = omero.url
        opts = {**omero.opts, "user": "bob", "group": "other"}
        needles = [f"omero://plate_{omero.plate_id}", "'bob'", "not a member"]
    before = omero.server.counts()
    message = _cli_plan_error(plate, opts)
    assert all(n in message for n in needles), message
    message = _failure(_run(plate, storage_options=opts))
    assert all(n in message for n in needles), message
    assert omero.server.counts() == before


def test_wrong_password_at_handler_and_filesystem(omero: Omero) -> None:
    wrong = {**omero.opts, "user": "carol", "password": "not-" + PASSWORD}
    before = omero.server.counts()
    with pytest.raises(OmeroAuthError) as info:
        open_omero_plate(omero.url, wrong)
    assert "'carol'" in str(info.value) and PASSWORD not in str(info.value)
    fs = OmeroFileSystem(**wrong, skip_instance_cache=True)
    with pytest.raises(OmeroAuthError):
        fs.pipe_file(f"plate_{omero.plate_id}/outputs/tables/x.csv", b"a,b\n")
    with pytest.raises(OmeroAuthError):
        fs.ls(f"plate_{omero.plate_id}")
    assert omero.server.counts() == before
    # the right password works (so the failures above were about the password)
    right = OmeroFileSystem(**{**wrong, "password": PASSWORD}, skip_instance_cache=True)
    assert len(right.ls(f"plate_{omero.plate_id}")) == len(WELLS) + 1


@pytest.mark.server
def test_password_route_into_a_run(prefect_server: str, omero: Omero) -> None:
    """A password in storage_options is refused; the credentials block is the way, and a wrong
    password there fails the run clearly, without showing the password."""
    from prefect_hcs.blocks.omero_credentials import OmeroCredentials

    before = omero.server.counts()
    in_options = {**omero.opts, "user": "carol", "password": PASSWORD}
    with pytest.raises(UserFacingError) as refused:  # before the run (and its parameters) exist
        _run(omero.url, storage_options=in_options)
    message = str(refused.value)
    assert "'password' looks like a secret" in message and "credentials_block" in message
    assert PASSWORD not in message

    tag = uuid.uuid4().hex[:8]
    for name, password in ((f"carol-{tag}", PASSWORD), (f"carol-wrong-{tag}", "x" + PASSWORD)):
        OmeroCredentials(
            username="carol",
            password=password,
            group="lab",
            host=standin_host(str(omero.server.directory)),
        ).save(name)
    plan = compile_from_parameters(
        omero.url, "demo", None, None, {"credentials_block": f"carol-{tag}"}
    )
    assert plan.wells == tuple(WELLS)  # the block route works
    message = _failure(_run(omero.url, storage_options={"credentials_block": f"carol-wrong-{tag}"}))
    assert "login failed for user 'carol'" in message and PASSWORD not in message
    assert omero.server.counts() == before


@pytest.mark.server
@pytest.mark.parametrize("retried_by", ["filesystem", "task"])
def test_dropped_connection_is_retried(
    prefect_server: str, omero: Omero, tmp_path: Path, retried_by: str
) -> None:
    task_retries = 0 if retried_by == "filesystem" else 2
    g = _yaml(
        tmp_path / "g.yaml",
        f"execution_config: {{retries: {task_retries}, retry_delay_seconds: 0}}\n",
    )
    if retried_by == "filesystem":
        opts = {**omero.opts, "retry_delay": 0.01}  # 3 retries per call absorb 2 drops
        omero.server.inject_fault("read_plane", times=2)
    else:
        opts = {**omero.opts, "retries": 0}  # the fs gives up at once: the task must retry
        omero.server.inject_fault("read_plane", times=1)  # step 0 reads the plate
        omero.server.inject_fault("upload_file_annotation", times=1)  # step 3's table: re-reads
        # its in-memory input on the retry
    state = _run(omero.url, global_config=g, storage_options=opts)
    assert state.is_completed(), state.message
    assert omero.faults_left() == 0  # every drop happened
    rows = _table(state.result()["tables"]["count.measurements"], omero.opts)
    assert sorted(r["well"] for r in rows) == WELLS
    images = {o for o in omero.outputs() if "/outputs/images/" in o}
    assert images == {f"{omero.url}/{w}/outputs/images/{w}.tif" for w in WELLS}


@pytest.mark.server
def test_permanent_connection_loss_fails_the_well_clearly(
    prefect_server: str, omero: Omero, tmp_path: Path
) -> None:
    # one well at a time, so the first well (A01) meets every fault: 2 fs attempts x 2 task runs
    g = _yaml(
        tmp_path / "g.yaml",
        "num_workers: 1\nexecution_config: {retries: 1, retry_delay_seconds: 0}\n",
    )
    opts = {**omero.opts, "retries": 1, "retry_delay": 0}
    omero.server.inject_fault("read_plane", times=4)
    message = _failure(_run(omero.url, global_config=g, storage_options=opts))
    assert omero.faults_left() == 0
    assert "A01: step 'project'" in message and "OmeroConnectionError" in message, message
    assert "gave up after 2 attempts" in message
    for w in ("A02", "B01", "B02"):
        assert w not in message
    outputs = omero.outputs()
    assert not [o for o in outputs if o.startswith(f"{omero.url}/A01/")], outputs
    assert f"{omero.url}/A02/outputs/images/A02.tif" in outputs  # the others completed
    assert not [o for o in outputs if o.startswith(f"{omero.url}/outputs/")]  # no plate tables


@pytest.mark.parametrize("path", [SEED_PATH, f"omero://{SEED_PATH}", "omero://plate_1/../x"])
def test_paths_outside_the_scheme_are_refused(omero: Omero, path: str) -> None:
    fs = omero.fs()
    needle = path.removeprefix("omero://").lstrip("/")  # the message names the path
    before = omero.server.counts()
    for attempt in (
        lambda: fs.makedirs(path, exist_ok=True),
        lambda: fs.pipe_file(f"{path}/A01.tif", b"x"),
        lambda: fs.open(f"{path}/A01.tif", "wb"),
        lambda: hio.write_bytes(
            f"omero://{path.removeprefix('omero://')}/A01.tif", b"x", omero.opts
        ),
    ):
        with pytest.raises(ValueError) as info:
            attempt()
        assert needle in str(info.value) and "omero://" in str(info.value), str(info.value)
    assert omero.server.counts() == before
    assert not Path("/omero").exists()


# ------------------------------------------------------------------------ 5. `demo --omero`
def test_prepare_omero_demo_is_idempotent(tmp_path: Path) -> None:
    from prefect_hcs.testing.omero_demo import describe_omero_outputs, prepare_omero_demo

    first = prepare_omero_demo(tmp_path / "demo", wells=("A01", "B02"), size=64)
    again = prepare_omero_demo(tmp_path / "demo", wells=("A01", "B02"), size=64)
    assert again == first
    assert first["plate"].startswith("omero://plate_")
    assert StandinServer(first["standin_dir"]).counts()["plates"] == 1
    assert first["storage_options"] == {
        "host": standin_host(str((tmp_path / "demo" / "omero-standin").resolve())),
        "user": "demo",
        "group": "demo",
    }
    plan = compile_from_parameters(
        first["plate"],
        "demo",
        first["global_config"],
        first["pipeline_config"],
        first["storage_options"],
    )
    assert {p.materialized_backend for p in plan.step_plans} == {"omero"}
    assert all(p.materialized_output_dir for p in plan.step_plans)  # checkpoints enabled
    assert describe_omero_outputs(first["plate"], first["storage_options"]) == []
    assert all(str(p).startswith(str(tmp_path / "demo")) for p in tmp_path.rglob("*"))


@pytest.mark.server
def test_omero_demo_run_lists_its_annotations(prefect_server: str, tmp_path: Path) -> None:
    from prefect_hcs.testing.omero_demo import describe_omero_outputs, prepare_omero_demo

    demo = prepare_omero_demo(tmp_path / "demo", wells=("A01", "B02"), size=64)
    state = _run(
        demo["plate"],
        global_config=demo["global_config"],
        pipeline_config=demo["pipeline_config"],
        storage_options=demo["storage_options"],
    )
    assert state.is_completed(), state.message
    lines = describe_omero_outputs(demo["plate"], demo["storage_options"])
    plate = demo["plate"]
    for expected in (
        f"{plate}/outputs/count_measurements.csv",
        f"{plate}/B02/outputs/images/B02.tif",
        f"{plate}/A01/outputs/checkpoints/stitch/A01.tif",
        f"{plate}/A01/outputs/tables/count_measurements.csv",
    ):
        assert any(line.startswith(expected + "  (") for line in lines), (expected, lines)
    assert len(lines) == 2 + 2 * (len(STEPS) + 1 + 2)  # plate tables; per well 5+1+2
    assert all("FileAnnotation" in line for line in lines)
