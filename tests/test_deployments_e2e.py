"""The remote-execution boundary: deployments served from a subprocess, run with run_deployment.

One `prefect-hcs serve` subprocess (module fixture) serves process-plate, process-screen and
watch-plates against the session's real server. Each plate case checks its outputs and that the
plan fingerprints the served run published equal the ones compiled here for the same inputs.
Also: the seed scenario (OMERO), a screen with a failing plate, the watch schedule (serve and
`prefect deploy`), prefect.yaml = serve, and the Dask scale-out path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import assert_same_outputs, wait_for_task_runs

from prefect_hcs.formats.validate_zarr import validate_plate
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime.compile import compile_from_parameters
from prefect_hcs.runtime.plan_artifacts import fingerprint_rows, fingerprints_key
from prefect_hcs.testing.omero_standin import standin_host
from prefect_hcs.testing.synthetic import make_plate

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAME = "e2e"  # deployment name of the served flows ("process-plate/e2e", ...)
WATCH_CRON = "0 3 * * *"  # never fires during the tests


def _small_plate(path: Path, wells: list[str], seed: int) -> str:
    make_plate(
        str(path), format="imagexpress", wells=wells, sites=4, channels=2, z=2, size=128, seed=seed
    )
    return str(path)


# ------------------------------------------------------------------------------ API helpers
def _read_deployment(client: Any, name: str) -> Any | None:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def _artifacts(api_url: str, flow_run_id: Any) -> list[dict[str, Any]]:
    """Artifacts of one flow run. Raw request: this Prefect client sends `null` sub-filters that
    the server (FastAPI 0.154) rejects with 422, so the body names only what it filters on."""
    import httpx

    body = {
        "artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}},
        "sort": "CREATED_DESC",
        "limit": 200,
        "offset": 0,
    }
    r = httpx.post(f"{api_url}/artifacts/filter", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def _artifact_data(api_url: str, flow_run_id: Any, key: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = [a for a in _artifacts(api_url, flow_run_id) if a["key"] == key]
        if found:
            data = found[0]["data"]
            return json.loads(data) if isinstance(data, str) else data
        if time.monotonic() > deadline:
            raise AssertionError(f"no artifact {key!r} on flow run {flow_run_id}")
        time.sleep(0.5)


def _published(api_url: str, flow_run_id: Any, plate_id: str) -> dict[str, str]:
    """{item: fingerprint} as the served run published them."""
    rows = _artifact_data(api_url, flow_run_id, fingerprints_key(plate_id))
    return {r["item"]: r["fingerprint"] for r in rows}


def _local(plan: Any) -> dict[str, str]:
    return {r["item"]: r["fingerprint"] for r in fingerprint_rows(plan)}


def _run(name: str, parameters: dict[str, Any], timeout: float = 180) -> Any:
    from prefect.deployments import run_deployment

    run = run_deployment(name=name, parameters=parameters, timeout=timeout, poll_interval=1)
    assert run.state is not None and run.state.is_final(), (
        f"{name} did not end within {timeout} s (state {run.state})"
    )
    return run


def _save_block(kind: str, name: str, values: dict[str, Any]) -> str:
    from prefect_hcs.blocks.config_blocks import LAYER_BLOCKS
    from prefect_hcs.config.layers import load_layer

    cls = LAYER_BLOCKS[kind]
    cls.from_layer(load_layer(values, layer=kind, origin="test")).save(name, overwrite=True)
    return name


# ------------------------------------------------------------------------------ serve fixture
@dataclass
class Served:
    api_url: str
    cwd: Path
    log: Path
    watch_folder: Path


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the serve process group; SIGKILL it if it is still alive after 15 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def served(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`prefect-hcs serve --name e2e` in a subprocess, ready when the API lists its deployments."""
    from prefect.client.orchestration import get_client

    base = tmp_path_factory.mktemp("serve")
    cwd = base / "cwd"  # must stay empty: nothing a run does may land in the worker's folder
    cwd.mkdir()
    log = base / "serve.log"
    watch = base / "inbox"
    env = dict(os.environ, PREFECT_API_URL=prefect_server, PREFECT_RUNNER_POLL_FREQUENCY="1")
    cmd = [str(BIN / "prefect-hcs"), "serve", "--name", NAME, "--watch-folder", str(watch)]
    cmd += ["--watch-cron", WATCH_CRON]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        names = [f"{f}/{NAME}" for f in ("process-plate", "process-screen", "watch-plates")]
        with get_client(sync_client=True) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited early:\n{log.read_text()[-3000:]}")
                ready = "being served" in log.read_text(errors="replace")
                if ready and all(_read_deployment(client, n) for n in names):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"serve not ready in 90 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield Served(prefect_server, cwd, log, watch)
    finally:
        _stop(proc)


# ------------------------------------------------------------------------------ no server
def test_prefect_yaml_matches_serve() -> None:
    """deployments/prefect.yaml and `prefect-hcs serve` declare the same deployments."""
    from prefect_hcs.runtime.serve import DEPLOYMENT_NAME, SPECS, WATCH_CRON, _flow

    doc = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    assert doc["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"]
    deps = doc["deployments"]
    assert [d["entrypoint"] for d in deps] == [s.entrypoint for s in SPECS.values()]
    for dep, (flow_name, spec) in zip(deps, SPECS.items(), strict=True):
        path, attr = dep["entrypoint"].split(":")
        namespace: dict[str, Any] = {}
        exec(compile((REPO / path).read_text(), path, "exec"), namespace)  # noqa: S102
        assert namespace[attr] is _flow(spec) and _flow(spec).name == flow_name
        assert dep["name"] == DEPLOYMENT_NAME
        assert tuple(dep["tags"]) == spec.tags
        assert dep["concurrency_limit"]["limit"] == spec.concurrency_limit
        assert dep["concurrency_limit"]["collision_strategy"] == spec.collision_strategy
        assert spec.parameters.items() <= dep["parameters"].items()
        assert dep["work_pool"]["name"] == "hcs-process"
        json.dumps(dep["parameters"])  # plain JSON, so the UI's Run form can edit it
    watch = deps[-1]
    assert watch["schedules"][0]["cron"] == WATCH_CRON and "folder" in watch["parameters"]


# ------------------------------------------------------------------------------ plates
@pytest.mark.server
def test_disk_plate_through_the_deployment(served: Served, tmp_path: Path) -> None:
    plate = _small_plate(tmp_path / "DiskPlate", ["A01", "B01"], seed=21)
    run = _run(f"process-plate/{NAME}", {"plate": plate})
    assert run.state.is_completed(), run.state.message
    zarr_url = tmp_path / "DiskPlate_hcs" / "DiskPlate.ome.zarr"
    assert validate_plate(str(zarr_url)) == []
    local = compile_from_parameters(plate, "demo", None, None, {})
    assert _published(served.api_url, run.id, local.plate_id) == _local(local)


@pytest.mark.server
def test_zarr_output_and_zarr_checkpoints_through_the_deployment(
    served: Served, tmp_path: Path
) -> None:
    plate = _small_plate(tmp_path / "ZarrPlate", ["A01", "A02"], seed=22)
    out = tmp_path / "outputs"
    block = _save_block(
        "pipeline",
        "e2e-zarr-checkpoints",
        {
            "path_planning_config": {"global_output_folder": str(out)},
            "step_materialization_config": {"enabled": True},
            "vfs_config": {"materialization_backend": "zarr"},
            "num_workers": 2,  # two wells create the same checkpoint group concurrently
        },
    )
    run = _run(f"process-plate/{NAME}", {"plate": plate, "pipeline_config": block})
    assert run.state.is_completed(), run.state.message
    assert validate_plate(str(out / "ZarrPlate_hcs" / "ZarrPlate.ome.zarr")) == []
    local = compile_from_parameters(plate, "demo", None, block, {})
    assert {p.materialized_backend for p in local.step_plans} == {"zarr"}
    import zarr

    for step in local.steps:  # every step's checkpoint is a Zarr store with both wells
        store = str(out / "ZarrPlate_hcs" / "checkpoints" / f"{step}.zarr")
        group = zarr.open_group(store, mode="r")
        assert {"A01", "A02"} <= set(group.keys()), (step, list(group.keys()))
    assert _published(served.api_url, run.id, local.plate_id) == _local(local)
    assert not (tmp_path / "ZarrPlate_hcs").exists()  # everything went to the configured folder


def _files(root: Path, skip: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if skip not in p.parents and p != skip}


@pytest.mark.server
def test_seed_scenario_omero_plate_through_the_deployment(served: Served, tmp_path: Path) -> None:
    """Global `materialization_backend: omero`, pipeline block leaving vfs_config unset, run by
    the served deployment: every plan says omero, checkpoints are OMERO annotations, and nothing
    is written to any local folder (not next to the source, not in the worker's cwd, no /omero)."""
    from prefect_hcs.formats.detect import open_plate
    from prefect_hcs.storage.omero_fs import OmeroFileSystem
    from prefect_hcs.testing.omero_standin import StandinServer

    source = _small_plate(tmp_path / "Src", ["A01", "B02"], seed=23)
    omero_dir = tmp_path / "omero"
    server = StandinServer.create(omero_dir)
    server.add_user("alice", group="lab")
    plate_id = server.import_plate_from_layout(open_plate(source), group="lab", owner="alice")
    opts = {"host": standin_host(str(omero_dir)), "user": "alice", "group": "lab"}
    url = f"omero://plate_{plate_id}"
    g = _save_block(
        "global", "e2e-omero-global", {"vfs_config": {"materialization_backend": "omero"}}
    )
    p = _save_block(
        "pipeline", "e2e-omero-pipeline", {"step_materialization_config": {"enabled": True}}
    )
    before = _files(tmp_path, omero_dir)
    annotations_before = server.counts()["annotations"]

    run = _run(
        f"process-plate/{NAME}",
        {"plate": url, "global_config": g, "pipeline_config": p, "storage_options": opts},
    )
    assert run.state.is_completed(), run.state.message
    local = compile_from_parameters(url, "demo", g, p, opts)
    assert {p.materialized_backend for p in local.step_plans} == {"omero"}
    assert _published(served.api_url, run.id, local.plate_id) == _local(local)

    fs = OmeroFileSystem(**opts)
    for well in local.wells:
        found = fs.find(f"plate_{plate_id}/{well}/outputs/checkpoints")
        for step in local.steps:
            assert any(f"/checkpoints/{step}/" in f for f in found), (well, step, found)
    tables = hio.csv_to_rows(hio.read_bytes(local.output.tables["count.measurements"], opts))
    assert {r["well"] for r in tables} == set(local.wells)
    assert server.counts()["annotations"] > annotations_before
    assert _files(tmp_path, omero_dir) == before
    assert list(served.cwd.iterdir()) == [] and not Path("/omero").exists()


# ------------------------------------------------------------------------------ screen
@pytest.mark.server
def test_screen_runs_one_plate_run_each_and_fails_after_all_ended(
    served: Served, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    good = _small_plate(tmp_path / "Good", ["A01"], seed=24)
    missing = str(tmp_path / "Missing")
    run = _run(f"process-screen/{NAME}", {"plates": [good, missing], "poll_seconds": 1}, 240)
    assert run.state.is_failed()
    assert missing in run.state.message and "1 of 2 plate(s)" in run.state.message

    table = next(
        a for a in _artifacts(served.api_url, run.id) if (a["key"] or "").startswith("screen-")
    )
    rows = {r["plate"]: r for r in json.loads(table["data"])}
    assert rows[good]["state"] == "completed" and rows[good]["reason"] == ""
    assert (
        rows[missing]["state"] == "failed" and "plate folder not found" in rows[missing]["reason"]
    )
    with get_client(sync_client=True) as client:
        screen = client.read_flow_run(run.id)
        for row in rows.values():
            child = client.read_flow_run(row["flow_run_id"])
            assert child.state.is_final() and child.end_time <= screen.end_time
            parent_task = client.read_task_run(child.parent_task_run_id)
            assert parent_task.flow_run_id == run.id  # linked as a subflow of the screen
    assert validate_plate(str(tmp_path / "Good_hcs" / "Good.ome.zarr")) == []

    # the missing plate arrives; retrying the screen run re-runs only that plate's run
    from prefect.states import Scheduled

    _small_plate(Path(missing), ["A01"], seed=26)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Scheduled(), force=True)  # = `prefect flow-run retry`
        deadline = time.monotonic() + 180
        while not (screen := client.read_flow_run(run.id)).state.is_final() or screen.run_count < 2:
            assert time.monotonic() < deadline, f"screen retry did not end: {screen.state}"
            time.sleep(1)
        assert screen.state.is_completed(), screen.state.message
        good_run = client.read_flow_run(rows[good]["flow_run_id"])
        again = client.read_flow_run(rows[missing]["flow_run_id"])
    assert good_run.run_count == 1 and good_run.state.is_completed()  # not processed twice
    assert again.run_count == 2 and again.state.is_completed()
    assert validate_plate(str(tmp_path / "Missing_hcs" / "Missing.ome.zarr")) == []


# ------------------------------------------------------------------------------ schedules
@pytest.mark.server
def test_served_watch_deployment_has_its_cron_schedule(served: Served) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"watch-plates/{NAME}")
    assert [s.schedule.cron for s in dep.schedules] == [WATCH_CRON]
    assert dep.parameters["folder"] == str(served.watch_folder)
    assert dep.parameters["plate_deployment"] == f"process-plate/{NAME}"
    assert set(dep.tags) == {"hcs", "hcs-watch"}


@pytest.mark.server
def test_prefect_deploy_registers_prefect_yaml_with_its_schedule(prefect_server: str) -> None:
    """`prefect deploy` of deployments/prefect.yaml (no worker needed to register).

    Prefect 3.8.8's CLI, after creating each deployment, asks the server for the pool's workers
    with `"limit": null`, which this server (FastAPI 0.154) rejects with 422, so the command exits
    1 *after* registering. Each deployment is therefore deployed by name and checked via the API.
    """
    from prefect.client.orchestration import get_client

    env = dict(os.environ, PREFECT_API_URL=prefect_server)
    pool = subprocess.run(
        [str(BIN / "prefect"), "work-pool", "create", "hcs-process", "--type", "process"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,  # fmt: skip
    )
    assert pool.returncode == 0 or "already exists" in pool.stdout + pool.stderr, pool.stderr
    for flow_name in ("process-plate", "process-screen", "watch-plates"):
        out = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--prefect-file",
             "deployments/prefect.yaml", "--name", f"{flow_name}/hcs"],
            cwd=REPO, capture_output=True, text=True, timeout=180, env=env,
        )  # fmt: skip
        text = out.stdout + out.stderr
        assert "successfully created" in text or "successfully updated" in text, text[-3000:]
        assert out.returncode == 0 or "workers/filter" in text, text[-3000:]
    with get_client(sync_client=True) as client:
        watch = client.read_deployment_by_name("watch-plates/hcs")
        plate = client.read_deployment_by_name("process-plate/hcs")
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in watch.schedules] == [
        ("*/5 * * * *", "UTC", True)
    ]
    assert watch.work_pool_name == "hcs-process" and watch.entrypoint.startswith("flows/")
    assert watch.pull_steps[0]["prefect.deployments.steps.set_working_directory"]
    assert plate.global_concurrency_limit is not None
    assert plate.global_concurrency_limit.limit == 4
    assert set(plate.tags) == {"hcs", "hcs-plate"}
    assert plate.parameter_openapi_schema["required"] == ["plate"]


# ------------------------------------------------------------------------------ scale-out
@pytest.mark.server
def test_dask_scale_out_gives_identical_outputs_from_worker_processes(
    prefect_server: str, tmp_path: Path
) -> None:
    pytest.importorskip("prefect_dask")
    from prefect_hcs.runtime.flow import process_plate

    wells = ["A01", "A02", "B01"]
    plate = _small_plate(tmp_path / "Scale", wells, seed=25)
    summaries = {}
    for runner in ("threads", "processes", "dask"):
        cfg = tmp_path / f"global-{runner}.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "num_workers": 2,
                    "path_planning_config": {"global_output_folder": str(tmp_path / runner)},
                    "execution_config": {"task_runner": runner},
                }
            )
        )
        state = process_plate(plate=plate, global_config=str(cfg), return_state=True)
        assert state.is_completed(), state.message
        summaries[runner] = state.result()
        assert summaries[runner]["task_runner"] == runner
    local = compile_from_parameters(plate, "demo", str(tmp_path / "global-dask.yaml"), None, {})
    assert not local.intermediates_in_memory  # dask: intermediates go through files

    t, d = summaries["threads"], summaries["dask"]
    assert_same_outputs(t, d, wells)
    assert validate_plate(d["output"]) == []
    me = os.getpid()
    assert {p for pids in t["worker_pids"].values() for p in pids} == {me}
    dask_pids = {p for pids in d["worker_pids"].values() for p in pids}
    assert set(d["worker_pids"]) == set(wells)
    assert me not in dask_pids and len(dask_pids) >= 2, d["worker_pids"]
    p = summaries["processes"]
    assert_same_outputs(t, p, wells)
    pool_pids = {pid for pids in p["worker_pids"].values() for pid in pids}
    assert me not in pool_pids and len(pool_pids) == 2, p["worker_pids"]


@pytest.mark.server
def test_screen_with_a_corrupt_plate_and_a_blipping_omero_plate(
    served: Served, tmp_path: Path
) -> None:
    """Issue 6: one plate fails fast (corrupt file, no retries); one hits transient OMERO drops
    that are retried automatically and completes; the screen reports both."""
    from prefect_hcs.formats.detect import open_plate
    from prefect_hcs.testing.omero_standin import StandinServer

    corrupt = _small_plate(tmp_path / "Corrupt", ["A01", "A02"], seed=31)
    victim = sorted(Path(corrupt).rglob("*_A02_s2_w1*.tif"))[0]
    victim.write_bytes(victim.read_bytes()[:150])
    source = _small_plate(tmp_path / "ForOmero", ["A01", "A02"], seed=32)
    standin = StandinServer.create(tmp_path / "omero")
    standin.add_user("alice", group="lab")
    plate_id = standin.import_plate_from_layout(open_plate(source), group="lab")
    omero_url = f"omero://plate_{plate_id}"
    # the filesystem gives up at once, so each drop fails a task attempt that Prefect retries
    opts = {
        "host": standin_host(str(tmp_path / "omero")),
        "user": "alice",
        "group": "lab",
        "retries": 0,
    }
    standin.inject_fault("read_plane", times=2)
    g = tmp_path / "g.yaml"
    g.write_text("num_workers: 1\nexecution_config: {retries: 3, retry_delay_seconds: 0.2}\n")
    run = _run(
        f"process-screen/{NAME}",
        {
            "plates": [corrupt, omero_url],
            "global_config": str(g),
            "storage_options": opts,
            "poll_seconds": 1,
        },  # fmt: skip
        300,
    )
    assert run.state.is_failed()
    table = next(
        a for a in _artifacts(served.api_url, run.id) if (a["key"] or "").startswith("screen-")
    )
    rows = {r["plate"]: r for r in json.loads(table["data"])}
    assert rows[omero_url]["state"] == "completed", rows[omero_url]
    assert rows[corrupt]["state"] == "failed"
    assert "A02" in rows[corrupt]["reason"] and victim.name in rows[corrupt]["reason"]

    def step_runs(flow_run_id: str) -> list:
        runs = wait_for_task_runs(flow_run_id, steps_only=True)
        assert runs and all(r.state.is_final() for r in runs), "task runs not recorded"
        return runs

    corrupt_steps = step_runs(rows[corrupt]["flow_run_id"])
    assert all(r.run_count == 1 for r in corrupt_steps)  # deterministic: never retried
    omero_steps = step_runs(rows[omero_url]["flow_run_id"])
    assert sum(r.run_count - 1 for r in omero_steps) == 2  # each drop cost one task retry
    assert all(r.state.is_completed() for r in omero_steps)


@pytest.mark.server
def test_retry_failed_reschedules_a_failed_deployment_run_which_resumes(
    served: Served, tmp_path: Path
) -> None:
    """`prefect-hcs retry-failed --deployment` = the UI's Retry: same run, rescheduled, resumed."""
    import subprocess
    import sys

    from prefect.client.orchestration import get_client

    plate = _small_plate(tmp_path / "RetryMe", ["A01", "A02"], seed=41)
    victim = sorted(Path(plate).rglob("*_A02_s1_w1*.tif"))[0]
    good = victim.read_bytes()
    victim.write_bytes(good[:100])
    run = _run(f"process-plate/{NAME}", {"plate": plate})
    assert run.state.is_failed()
    done = tmp_path / "RetryMe_hcs" / ".hcs-done"
    a01_marker = (done / "A01.json").stat().st_mtime_ns
    assert not (done / "A02.json").exists()

    victim.write_bytes(good)
    exe = Path(sys.executable).with_name("prefect-hcs")
    out = subprocess.run(
        [str(exe), "retry-failed", "--deployment", NAME, "--since", "1h"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"rescheduled {run.name}" in out.stdout
    deadline = time.monotonic() + 180
    with get_client(sync_client=True) as client:
        while not (again := client.read_flow_run(run.id)).state.is_final() or again.run_count < 2:
            assert time.monotonic() < deadline, f"retried run did not end: {again.state}"
            time.sleep(1)
    assert again.state.is_completed(), again.state.message
    assert (done / "A02.json").exists()
    assert (done / "A01.json").stat().st_mtime_ns == a01_marker  # A01 was not recomputed
    assert validate_plate(str(tmp_path / "RetryMe_hcs" / "RetryMe.ome.zarr")) == []
