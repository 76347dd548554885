"""Benchmark: a CPU-bound plate on 1 vs 2 Dask workers, each a separate `dask worker` process.

A `dask scheduler` and N `dask worker --nthreads 1` processes are started on loopback; the
`process-plate` flow runs in its own process against a real local Prefect server with
`execution_config: {task_runner: dask, dask_address: <scheduler>}` and `num_workers: N`, so the
wells are spread over the worker processes exactly as on an existing cluster. The speed-up is
wall(1 worker) / wall(2 workers) of the whole flow run (compile, prepare, steps, finalize).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dask(n_workers: int, root: Path, env: dict[str, str]) -> tuple[str, list]:
    """(scheduler address, processes): a scheduler and `n_workers` single-thread workers."""
    from distributed import Client

    root.mkdir(parents=True, exist_ok=True)
    address = f"tcp://127.0.0.1:{_free_port()}"
    port = address.rsplit(":", 1)[1]

    def spawn(cmd: list[str], log: str) -> subprocess.Popen:
        return subprocess.Popen(cmd, stdout=open(root / log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                env=env, start_new_session=True)  # fmt: skip

    procs = [spawn([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", port,
                    "--no-dashboard"], "scheduler.log")]  # fmt: skip
    for i in range(n_workers):
        procs.append(spawn([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--name",
                            f"bench-w{i + 1}", "--no-dashboard", "--local-directory",
                            str(root / f"w{i + 1}")], f"worker-{i + 1}.log"))  # fmt: skip
    with Client(address, timeout="60s") as client:
        client.wait_for_workers(n_workers, timeout=120)
    return address, procs


def stop(procs: list) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def mode_dask(plate: str, out: str, address: str, workers: int) -> dict:
    """In the child process: one flow run on the scheduler at `address`."""
    from prefect_hcs.runtime.flow import process_plate

    g = Path(out) / f"global-dask-{workers}.yaml"
    g.write_text(json.dumps({
        "num_workers": workers,
        "path_planning_config": {"global_output_folder": out, "output_dir_suffix": f"_dask{workers}"},
        "execution_config": {"task_runner": "dask", "dask_address": address},
    }))  # fmt: skip
    t0 = time.perf_counter()
    state = process_plate(plate=plate, global_config=str(g), return_state=True)
    seconds = time.perf_counter() - t0
    assert state.is_completed(), state.message
    summary = state.result()
    ran_on = sorted({p["dask_worker"] for ps in summary["placement"].values() for p in ps})
    return {"seconds": seconds, "inner_seconds": summary["seconds"], "workers_used": ran_on}


def bench_dask(quick: bool, run_child, make_env) -> dict:
    """Time the same plate on 1 and on 2 Dask worker processes; returns the figures."""
    import tempfile

    from prefect_hcs.formats.wells import well_id
    from prefect_hcs.runtime.server import start_server
    from prefect_hcs.testing.synthetic import make_plate

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="hcs-bench-dask-"))
    n_wells, size = (6, 256) if quick else (12, 512)
    wells = [well_id(i // 6, i % 6) for i in range(n_wells)]
    plate = tmp / "DaskPlate"
    make_plate(str(plate), format="imagexpress", wells=wells, sites=4, channels=2, z=3,
               size=size, seed=2)  # fmt: skip
    server = start_server(tmp / "prefect-home")
    env = make_env(server.api_url, tmp)
    runs: dict = {}
    try:
        for n in (1, 2):
            address, procs = start_dask(n, tmp / f"dask-{n}", env)
            try:
                runs[n] = run_child(["_dask", str(plate), str(tmp), address, str(n)], env)
            finally:
                stop(procs)
    finally:
        server.stop()
    return {
        "plate": f"{n_wells} wells × 4 sites × 2 ch × 3 z, {size}²",
        "dask_1_worker": runs[1],
        "dask_2_workers": runs[2],
        "speedup": runs[1]["seconds"] / runs[2]["seconds"],
        "cpus": os.cpu_count(),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
    }
