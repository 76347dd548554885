"""Where a plate run's step tasks execute: the flow's threads, a Dask cluster, or SLURM jobs.

(``task_runner: processes`` runs the tasks as threads too; `process_pool` runs their chunks.)

The compiled plan says which (`task_runner`, `dask_address`, `slurm_cluster`); `scale_out_runner`
turns that into a started `prefect_dask.DaskTaskRunner`, entered inside the flow body so the flow
keeps its own runner: only the per-chunk step tasks go to Dask, while compile, prepare and finalize
stay in the flow process. `where` records, inside a task, which machine, process, Dask worker and
SLURM job ran it (the run summary lists it per well).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

from prefect_hcs.errors import UserFacingError
from prefect_hcs.pipeline.execution import LOCAL_RUNNERS
from prefect_hcs.pipeline.plan import PlatePlan


class ClusterUnavailableError(UserFacingError):
    """The Dask scheduler or SLURM cluster a run asks for cannot be used."""


def preflight(plan: PlatePlan) -> None:
    """Fail before any output is written when the plan's cluster cannot be used.

    Checks that prefect-dask (and dask-jobqueue) are installed, that the SLURM block exists and
    that an existing Dask scheduler answers; `scale_out_runner` then starts or connects for real.
    """
    if plan.task_runner in LOCAL_RUNNERS:
        return
    _dask_task_runner()
    if plan.task_runner == "slurm":
        _slurm_kwargs(plan)
    elif plan.dask_address:
        _probe_scheduler(plan.dask_address)


def _probe_scheduler(address: str) -> None:
    """Connect a Dask client once (Dask's connect timeout) to see that the scheduler answers."""
    from distributed import Client

    try:
        with Client(address, set_as_default=False):
            pass
    except (OSError, TimeoutError) as exc:
        raise ClusterUnavailableError(
            f"cannot reach the Dask scheduler at {address} (execution_config.dask_address): "
            f"{exc}. Start it (`dask scheduler`), or fix the address"
        ) from None


@contextlib.contextmanager
def scale_out_runner(plan: PlatePlan) -> Iterator[Any]:
    """A started task runner for the plan's step tasks, or None for the flow's own threads."""
    if plan.task_runner in LOCAL_RUNNERS:  # processes: the tasks are threads, see process_pool
        yield None
        return
    runner_cls = _dask_task_runner()
    if plan.task_runner == "slurm":
        kwargs, jobs = _slurm_kwargs(plan)
        runner = runner_cls(
            cluster_class="dask_jobqueue.SLURMCluster",
            cluster_kwargs=kwargs,
            adapt_kwargs={"minimum": jobs, "maximum": jobs},  # replaces jobs that end early
        )
        where = f"SLURM (block {plan.slurm_cluster!r})"
    elif plan.dask_address:
        runner = runner_cls(address=plan.dask_address)
        where = f"the Dask scheduler at {plan.dask_address} (execution_config.dask_address)"
    else:
        runner = runner_cls(cluster_kwargs=_local_cluster_kwargs(plan))
        where = "a Dask LocalCluster"
    local = plan.task_runner != "slurm" and not plan.dask_address  # a LocalCluster we start
    with contextlib.ExitStack() as stack:
        if local:
            stack.enter_context(_default_malloc_in_workers())
        stack.enter_context(runner)
        try:
            runner.client  # noqa: B018 - connect (or start the cluster) now, to fail clearly
        except (OSError, TimeoutError) as exc:
            raise ClusterUnavailableError(
                f"cannot reach {where}: {exc}. Start it, or fix the address / block"
            ) from None
        yield runner


def _dask_task_runner() -> type:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise UserFacingError(
            "execution_config.task_runner needs prefect-dask, which is not installed on this "
            "worker: `pip install prefect-hcs[dask]`, or set task_runner: threads"
        ) from None
    return DaskTaskRunner


def _default_malloc_in_workers() -> contextlib.AbstractContextManager[Any]:
    """While the LocalCluster starts: its worker processes keep glibc's own malloc thresholds.

    Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also fixes glibc's
    mmap threshold at 128 KiB: every array of a well is then mapped and unmapped again, each page
    faulted in afresh. Measured on the demo pipeline (8 wells, 512²): 10× the page faults, sys
    CPU 0.9 → 3.2 s, CPU inside the pipeline functions +35 %. Unset (dask's documented override,
    a None value), a worker reuses the freed memory of the previous well instead.
    """
    import dask

    return dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def _local_cluster_kwargs(plan: PlatePlan) -> dict[str, Any]:
    """One single-threaded worker process per `num_workers`, quiet, no fixed dashboard port."""
    return {
        "n_workers": plan.num_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",
        "silence_logs": logging.ERROR,
    }


def _slurm_kwargs(plan: PlatePlan) -> tuple[dict[str, Any], int]:
    """(SLURMCluster keyword arguments, jobs to keep) from the plan's `hcs-slurm-cluster` block."""
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        raise UserFacingError(
            "execution_config.task_runner is 'slurm' but dask-jobqueue is not installed on this "
            "worker: `pip install prefect-hcs[dask]`"
        ) from None
    from prefect_hcs.blocks.loading import load_block
    from prefect_hcs.blocks.slurm import HcsSlurmCluster

    if not plan.slurm_cluster:
        raise ClusterUnavailableError(
            "execution_config.task_runner is 'slurm' but execution_config.slurm_cluster names no "
            "hcs-slurm-cluster block"
        )
    try:
        block = load_block(HcsSlurmCluster, plan.slurm_cluster)
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        raise ClusterUnavailableError(
            f"execution_config.slurm_cluster: no hcs-slurm-cluster block named "
            f"{plan.slurm_cluster!r} on the Prefect server; create it (prefect-hcs blocks apply, "
            "or the Blocks page of the UI) or fix the name"
        ) from None
    kwargs = block.cluster_kwargs()
    kwargs.setdefault("silence_logs", "error")
    kwargs.setdefault("scheduler_options", {"dashboard_address": ":0"})
    return kwargs, block.job_count(plan.num_workers)


def describe(plan: PlatePlan) -> str:
    """Where the step tasks of `plan` run, for summaries and logs."""
    if plan.task_runner == "slurm":
        return f"slurm:{plan.slurm_cluster}"
    if plan.task_runner == "dask":
        return plan.dask_address or "dask:local"
    return plan.task_runner


def where() -> dict[str, Any]:
    """Which host, process, Dask worker and SLURM job are running the calling task."""
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    worker = None
    if "distributed" in sys.modules:  # a Dask worker has it loaded; never import it (~8 MB) here
        try:
            worker = sys.modules["distributed"].get_worker()
        except ValueError:
            worker = None
    if worker is not None:
        info["dask_worker"] = str(worker.name)
        info["dask_worker_address"] = worker.address
    if os.environ.get("SLURM_JOB_ID"):
        info["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return info
