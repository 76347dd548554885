"""Plate runs on an existing Dask scheduler and on a real single-node SLURM cluster.

The Dask test starts `dask scheduler` and two `dask worker --nthreads 1` processes on loopback; the
SLURM test starts munged, slurmctld and slurmd (tests/slurm_local.py; root and Debian's slurm-wlm
needed, skipped with the reason otherwise). Both share the output folder with the flow process,
record which worker / SLURM job ran every well, and must equal a local threads run exactly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from prefect_hcs.formats.validate_zarr import validate_plate
from prefect_hcs.runtime import io as hio
from prefect_hcs.testing.synthetic import make_plate

pytestmark = pytest.mark.server
BIN = Path(sys.executable).parent
WELLS = ["A01", "A02", "B01", "B02"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        stdout=open(log, "ab"),  # noqa: SIM115 - owned by the child
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        start_new_session=True,
    )


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


@pytest.fixture
def dask_scheduler(prefect_server: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """(address, {worker name: pid}) of a `dask scheduler` with two single-thread workers."""
    pytest.importorskip("distributed")
    from distributed import Client

    address = f"tcp://127.0.0.1:{_free_port()}"
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    procs = [
        _start(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                address.rsplit(":", 1)[1],
                "--no-dashboard",
            ],
            logs / "scheduler.log",
        )  # fmt: skip
    ]
    try:
        for name in ("hcs-w1", "hcs-w2"):
            procs.append(
                _start(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--name",
                        name,
                        "--no-dashboard",
                        "--local-directory",
                        str(tmp_path / name),
                    ],
                    logs / f"{name}.log",
                )  # fmt: skip
            )
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            pids = client.run(os.getpid)  # {worker address: pid}
            info = client.scheduler_info()["workers"]
            workers = {str(info[addr]["name"]): pid for addr, pid in pids.items()}
        yield address, workers
    finally:
        _stop(procs)


def _plate(tmp_path: Path) -> str:
    plate = tmp_path / "Cluster"
    make_plate(str(plate), format="imagexpress", wells=WELLS, sites=4, channels=2, z=2,
               size=128, seed=41)  # fmt: skip
    return str(plate)


@pytest.fixture(scope="module")
def local_run(prefect_server, tmp_path_factory) -> tuple[str, dict]:
    """(plate, summary) of the plate run with local threads: the reference the Dask and the
    SLURM runs must equal (made once; those tests only read its outputs)."""
    tmp = tmp_path_factory.mktemp("local-run")
    plate = _plate(tmp)
    return plate, _run(plate, tmp, "threads", {"task_runner": "threads"})


def _run(plate: str, tmp_path: Path, name: str, execution: dict) -> dict:
    from prefect_hcs.runtime.flow import process_plate

    cfg = tmp_path / f"global-{name}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "num_workers": 2,
                "path_planning_config": {"global_output_folder": str(tmp_path / name)},
                "execution_config": execution,
            }
        )
    )
    state = process_plate(plate=plate, global_config=str(cfg), return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def _assert_same_outputs(local: dict, other: dict) -> None:
    from prefect_hcs.formats.omezarr import read_well_image

    for well in WELLS:
        np.testing.assert_array_equal(
            read_well_image(local["output"], well, 0), read_well_image(other["output"], well, 0)
        )
    assert set(local["tables"]) == set(other["tables"])
    for name in local["tables"]:
        assert hio.read_bytes(local["tables"][name]) == hio.read_bytes(other["tables"][name]), name
    assert validate_plate(other["output"]) == []


def test_a_run_on_an_existing_dask_scheduler_uses_both_workers(dask_scheduler, local_run, tmp_path):
    address, workers = dask_scheduler
    plate, local = local_run
    remote = _run(plate, tmp_path, "dask", {"task_runner": "dask", "dask_address": address})

    _assert_same_outputs(local, remote)
    assert remote["task_runner"] == "dask" and remote["cluster"] == address
    placement = remote["placement"]
    assert set(placement) == set(WELLS)
    ran_on = {(p["dask_worker"], p["pid"]) for places in placement.values() for p in places}
    assert ran_on == set(workers.items()), (ran_on, workers)  # both workers, nothing else
    assert os.getpid() not in {pid for _, pid in ran_on}


def test_an_unreachable_scheduler_fails_the_run_with_one_clear_message(prefect_server, tmp_path):
    pytest.importorskip("distributed")
    import dask

    from prefect_hcs.runtime.flow import process_plate

    plate = _plate(tmp_path)
    dead = f"tcp://127.0.0.1:{_free_port()}"
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"execution_config": {"task_runner": "dask",
                                                        "dask_address": dead}}))  # fmt: skip
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        state = process_plate(plate=plate, global_config=str(cfg), return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert f"cannot reach the Dask scheduler at {dead}" in message
    assert "execution_config.dask_address" in message
    assert not (tmp_path / "Cluster_hcs").exists()


# ------------------------------------------------------------------------------------ SLURM
@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator:
    """A real one-node SLURM cluster (munged + slurmctld + slurmd), torn down after the module."""
    from slurm_local import LocalSlurm, unavailable_reason

    if reason := unavailable_reason():
        pytest.skip(f"no local SLURM: {reason}")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_run_through_slurm_runs_every_well_inside_slurm_jobs(
    prefect_server, slurm, local_run, tmp_path, monkeypatch
):
    pytest.importorskip("dask_jobqueue")
    from prefect_hcs.blocks.slurm import HcsSlurmCluster

    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)  # sbatch/squeue/scancel find the test cluster
    name = f"test-slurm-{os.getpid()}"
    marker = tmp_path / "prologue-ran"
    HcsSlurmCluster(
        partition=slurm.partition,
        cores=1,
        memory="1GB",
        walltime="00:20:00",
        jobs=2,
        job_script_prologue=[f"touch {marker}-$SLURM_JOB_ID"],
        log_directory=str(tmp_path / "slurm-logs"),
        local_directory=str(tmp_path / "scratch"),
    ).save(name, overwrite=True)
    plate, local = local_run
    started = time.monotonic()
    on_slurm = _run(plate, tmp_path, "slurm", {"task_runner": "slurm", "slurm_cluster": name})

    _assert_same_outputs(local, on_slurm)
    jobs = {p.get("slurm_job_id") for places in on_slurm["placement"].values() for p in places}
    assert None not in jobs and jobs, on_slurm["placement"]  # every step ran inside a SLURM job
    assert all(Path(f"{marker}-{job}").exists() for job in jobs)  # the block's prologue ran
    assert os.getpid() not in {p["pid"] for ps in on_slurm["placement"].values() for p in ps}
    # the jobs end with the run
    deadline = started + 120
    while time.monotonic() < deadline and _queued(slurm):
        time.sleep(1)
    assert _queued(slurm) == []


def _queued(slurm) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], env={**os.environ, **slurm.env},
                         capture_output=True, text=True, timeout=20)  # fmt: skip
    return out.stdout.split()


# ------------------------------------------------------------------------- compile-time checks
@pytest.mark.parametrize(
    ("execution", "expected"),
    [
        (
            {"task_runner": "threads", "dask_address": "tcp://127.0.0.1:8786"},
            "execution_config.dask_address (global layer: execution_config.dask_address",
        ),
        (
            {"task_runner": "dask", "dask_address": "127.0.0.1:8786"},
            "is not a Dask scheduler address: use tcp://host:8786",
        ),
        (
            {"task_runner": "dask", "dask_address": "tcp://host:99999"},
            "is not a Dask scheduler address",
        ),
        ({"task_runner": "slurm"}, "execution_config.slurm_cluster is unset"),
        (
            {"task_runner": "processes", "slurm_cluster": "hpc"},
            "is only used with task_runner 'slurm'",
        ),
    ],
)
def test_inconsistent_execution_settings_fail_at_compile_time(tmp_path, execution, expected):
    from prefect_hcs.errors import UserFacingError
    from prefect_hcs.runtime.compile import compile_from_parameters

    plate = _plate(tmp_path)
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"execution_config": execution}))
    with pytest.raises(UserFacingError) as info:
        compile_from_parameters(plate, "demo", str(cfg), None, {})
    assert expected in str(info.value)
    assert not (tmp_path / "Cluster_hcs").exists()


def test_execution_target_is_in_the_plan_with_its_provenance(tmp_path):
    from prefect_hcs.runtime.compile import compile_from_parameters

    plate = _plate(tmp_path)
    g, p = tmp_path / "g.yaml", tmp_path / "p.yaml"
    g.write_text(yaml.safe_dump({"execution_config": {"task_runner": "dask"}}))
    p.write_text(yaml.safe_dump({"execution_config": {"dask_address": "tls://sched.lab:8786"}}))
    plan = compile_from_parameters(plate, "demo", str(g), str(p), {})
    assert (plan.task_runner, plan.dask_address, plan.slurm_cluster) == (
        "dask", "tls://sched.lab:8786", None)  # fmt: skip
    source = next(iter(plan.resolved_config.values()))["execution_config.dask_address"]["source"]
    assert source["layer"] == "pipeline"
    local = compile_from_parameters(plate, "demo", str(g), None, {})
    assert [s.fingerprint for s in local.step_plans] == [s.fingerprint for s in plan.step_plans]


def test_slurm_block_validates_and_maps_to_slurmcluster():
    from pydantic import ValidationError

    from prefect_hcs.blocks.slurm import HcsSlurmCluster

    block = HcsSlurmCluster(partition="short", account="imaging", cores=4, memory="16GB",
                            walltime="1-02:00:00", job_script_prologue=["module load python"],
                            interface="ib0")  # fmt: skip
    kwargs = block.cluster_kwargs()
    assert kwargs["queue"] == "short" and kwargs["account"] == "imaging"
    assert block.job_count(3) == 3 and block.model_copy(update={"jobs": 5}).job_count(3) == 5
    assert kwargs["processes"] == 1 and kwargs["cores"] == 4
    # workers retire 5 min before the 26 h walltime instead of being killed mid-task
    assert kwargs["worker_extra_args"] == ["--lifetime", "1555m", "--lifetime-stagger", "2m"]
    assert kwargs["job_script_prologue"] == ["module load python"]
    assert kwargs["interface"] == "ib0" and "python" not in kwargs
    for bad, needle in (
        ({"walltime": "2 hours"}, "walltime '2 hours'"),
        ({"walltime": "30:00"}, "walltime '30:00'"),  # SLURM reads MM:SS; refused as ambiguous
        ({"memory": "lots"}, "memory 'lots'"),
        ({"job_script_prologue": ["export OMERO_PASSWORD=hunter2"]}, "looks like a secret"),
    ):
        with pytest.raises(ValidationError) as info:
            HcsSlurmCluster(**bad)
        assert needle in str(info.value)
        assert "hunter2" not in needle


def test_a_missing_slurm_block_fails_before_any_output_is_written(prefect_server, tmp_path):
    pytest.importorskip("dask_jobqueue")
    from prefect_hcs.runtime.flow import process_plate

    plate = _plate(tmp_path)
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"execution_config": {"task_runner": "slurm",
                                                        "slurm_cluster": "no-such-hpc"}}))  # fmt: skip
    state = process_plate(plate=plate, global_config=str(cfg), return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "no hcs-slurm-cluster block named 'no-such-hpc'" in message
    assert not (tmp_path / "Cluster_hcs").exists()


def test_blocks_apply_saves_a_slurm_block_and_refuses_a_secret(prefect_server, tmp_path):
    from prefect_hcs.blocks.slurm import HcsSlurmCluster

    exe = str(BIN / "prefect-hcs")
    name = f"apply-slurm-{os.getpid()}"
    folder = tmp_path / "blocks"
    folder.mkdir()
    (folder / "slurm.yaml").write_text(
        f"block_type: hcs-slurm-cluster\nname: {name}\nvalues:\n  partition: short\n"
        "  walltime: '00:30:00'\n  job_script_prologue: ['module load python']\n"
    )
    out = subprocess.run([exe, "blocks", "apply", str(folder)], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ))  # fmt: skip
    assert out.returncode == 0, out.stderr
    block = HcsSlurmCluster.load(name, _sync=True)
    assert (block.partition, block.walltime) == ("short", "00:30:00")

    (folder / "slurm.yaml").write_text(
        f"block_type: hcs-slurm-cluster\nname: {name}\nvalues:\n  partition: long\n"
        "  job_script_prologue: ['export API_TOKEN=s3cr3t-value']\n"
    )
    bad = subprocess.run([exe, "blocks", "apply", str(folder)], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ))  # fmt: skip
    assert bad.returncode == 2
    assert (
        "'export API_TOKEN' looks like a secret" in bad.stderr and "Nothing was saved" in bad.stderr
    )
    assert "s3cr3t-value" not in bad.stdout + bad.stderr
    assert HcsSlurmCluster.load(name, _sync=True).partition == "short"  # unchanged


def test_local_cluster_workers_keep_glibcs_malloc_thresholds(tmp_path):
    """Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in every worker (+35 % CPU in the
    pipeline functions, benchmarks/README.md); the LocalCluster a plate run starts must not."""
    from prefect_hcs.runtime.clusters import scale_out_runner
    from prefect_hcs.runtime.compile import compile_from_parameters

    plate = _plate(tmp_path)
    g = tmp_path / "g.yaml"
    g.write_text(yaml.safe_dump({"num_workers": 1, "execution_config": {"task_runner": "dask"}}))
    plan = compile_from_parameters(plate, "demo", str(g), None, {})
    with scale_out_runner(plan) as runner:
        env = runner.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert env and set(env.values()) == {None}, env
