"""`task_runner: processes` (the default for several workers) against a real Prefect server.

Each chunk runs in a worker process forked from a forkserver: the workers import no Prefect,
give the same outputs as threads, and a worker that dies (SIGKILL, as the OOM killer would)
costs a retry of its chunk, not the plate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pool_functions  # noqa: F401 - registers the functions the workers import by module
import pytest
import yaml
from helpers import assert_same_outputs, wait_for_task_runs

from prefect_hcs.testing.synthetic import make_plate

pytestmark = pytest.mark.server

WELLS = ["A01", "A02", "B01", "B02"]


def _plate(tmp_path: Path) -> str:
    plate = tmp_path / "Pool"
    make_plate(
        str(plate), format="imagexpress", wells=WELLS, sites=2, channels=1, z=2, size=64, seed=3
    )
    return str(plate)


def _run(prefect_server: str, tmp_path: Path, steps: list, retries: int = 2, **config):
    from prefect_hcs.runtime.flow import process_plate

    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "global.yaml"
    data = {
        "num_workers": 2,
        "path_planning_config": {"global_output_folder": str(tmp_path / "out")},
        "execution_config": {"retries": retries, "retry_delay_seconds": 0, **config},
    }
    cfg.write_text(yaml.safe_dump(data))
    pipeline = {"name": "pool", "steps": steps}
    return process_plate(
        plate=_plate(tmp_path), pipeline=pipeline, global_config=str(cfg), return_state=True
    )


PROJECT = {"name": "project", "func": "max_projection", "variable_components": ["z"]}


def test_workers_are_other_processes_without_prefect(prefect_server, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    note = {"name": "note", "func": {"name": "note_worker", "kwargs": {"folder": str(seen)}}}
    state = _run(prefect_server, tmp_path, [PROJECT, note])
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["task_runner"] == "processes"  # auto, 2 workers
    records = [json.loads(p.read_text()) for p in seen.glob("*.json")]
    pids = {r["pid"] for r in records}
    assert os.getpid() not in pids and len(pids) == 2, records
    assert not any(r["prefect"] for r in records), records
    assert {int(p) for p in summary["worker_peak_rss_mb"]} == pids
    assert {p for ps in summary["worker_pids"].values() for p in ps} == pids


def test_processes_and_threads_write_identical_outputs(prefect_server, tmp_path):
    out = {}
    for runner in ("threads", "processes"):
        state = _run(prefect_server, tmp_path / runner, _demo_steps(), task_runner=runner)
        assert state.is_completed(), state.message
        out[runner] = state.result()
    assert_same_outputs(out["threads"], out["processes"], WELLS)


def _demo_steps() -> list:
    return [
        PROJECT,
        {"name": "background", "func": {"name": "tophat_background", "kwargs": {"radius": 5}}},
        {"name": "stitch", "func": "stitch_tiles"},
        {"name": "count", "func": {"name": "count_nuclei", "kwargs": {"min_area": 5}}},
    ]


def test_a_killed_worker_costs_a_retry_of_its_chunk_not_the_plate(prefect_server, tmp_path):
    marker = tmp_path / "died"
    die = {"name": "die", "func": {"name": "die_once", "kwargs": {"marker": str(marker)}}}
    state = _run(prefect_server, tmp_path, [PROJECT, die])
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["wells_completed"] == len(WELLS) and summary["failures"] == {}
    dead = int(marker.read_text())
    assert dead not in {p for ps in summary["worker_pids"].values() for p in ps}
    runs = wait_for_task_runs(state.state_details.flow_run_id, min_count=2, steps_only=True)
    assert max(r.run_count for r in runs) == 2, [(r.name, r.run_count) for r in runs]


def test_a_worker_killed_on_the_last_attempt_fails_its_wells_clearly(prefect_server, tmp_path):
    die = {
        "name": "die",
        "func": {"name": "die_once", "kwargs": {"marker": str(tmp_path / "m"), "always": True}},
    }
    state = _run(prefect_server, tmp_path, [PROJECT, die], retries=0)
    assert state.is_failed()
    message = str(state.message)
    assert "a worker process died while running wells" in message, message
    assert "killed, out of memory or crashed" in message


def test_a_bug_in_a_worker_fails_each_well_naming_the_step(prefect_server, tmp_path):
    fail = {"name": "explode", "func": {"name": "fail_in_worker", "kwargs": {"well_marker": "x"}}}
    state = _run(prefect_server, tmp_path, [PROJECT, fail])
    assert state.is_failed()
    message = str(state.message)
    assert "step 'explode'" in message and "ZeroDivisionError: planted failure x" in message
    assert message.count("planted failure") == len(WELLS)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = (
        Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else "X"
    )
    return status != "Z"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_stop_when_the_flow_process_is_killed(prefect_server, tmp_path, sig):
    """SIGKILL of the flow (the OOM killer, `kill -9`) leaves no worker running on as an orphan;
    SIGTERM (a cancelled run, `kill`) stops them at once instead of after their chunk."""
    seen = tmp_path / "seen"
    seen.mkdir()
    wait = {"name": "wait", "func": {"name": "wait_in_worker", "kwargs": {"folder": str(seen)}}}
    cfg = tmp_path / "global.yaml"
    cfg.write_text(yaml.safe_dump({"num_workers": 2, "path_planning_config": {
        "global_output_folder": str(tmp_path / "out")}}))  # fmt: skip
    code = (
        "import json, sys; import pool_functions\n"
        "from prefect_hcs.runtime.flow import process_plate\n"
        "process_plate(plate=sys.argv[1], pipeline=json.loads(sys.argv[2]), global_config=sys.argv[3])"
    )
    tests_dir = str(Path(__file__).parent)
    env = dict(os.environ, PREFECT_API_URL=prefect_server,
               PYTHONPATH=os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    pipeline = json.dumps({"name": "wait", "steps": [PROJECT, wait]})
    flow = subprocess.Popen([sys.executable, "-c", code, _plate(tmp_path), pipeline, str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(list(seen.glob("*.pid"))) < 2 and time.monotonic() < deadline:
            assert flow.poll() is None, "the flow ended before its workers started"
            time.sleep(0.2)
        workers = [int(p.read_text()) for p in seen.glob("*.pid")]
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        flow.send_signal(sig)
        flow.wait(timeout=30)  # the workers' chunk would take 60 s: the flow must not wait for it
    finally:
        flow.kill()
        flow.wait()
    deadline = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), workers
