"""Where a plate run executes, checked at compile time: threads, processes, Dask, SLURM.

`choose_runner` settles ``task_runner: auto`` (the default) into the runner the plan records.
`execution_target` reads `execution_config.task_runner`, `dask_address` and `slurm_cluster`
from the resolved config and returns them with every inconsistency as a message naming the
field, the layer that set it and the fix — so a typo fails `prefect-hcs plan` and the flow's
compile step, not the cluster connection at well 217.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: Runners that run all the steps of a well in one process (intermediates may stay in memory).
LOCAL_RUNNERS = ("threads", "processes")

#: Dask's communication protocols (distributed.comm registries).
DASK_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")


@dataclass(frozen=True)
class ExecutionTarget:
    """The runner and its cluster, as the plan records them."""

    task_runner: str
    dask_address: str | None = None
    slurm_cluster: str | None = None
    problems: list[str] = field(default_factory=list)


def execution_target(resolved: Any, runner: str) -> ExecutionTarget:
    """The checked target of a resolved config (`ResolvedConfig`) whose task runner is `runner`."""
    address = _text(resolved.value("execution_config.dask_address"))
    slurm = _text(resolved.value("execution_config.slurm_cluster"))

    def where(dotted: str) -> str:
        return f"execution_config.{dotted} ({resolved.source(f'execution_config.{dotted}').describe()})"

    problems: list[str] = []
    if address and runner != "dask":
        problems.append(
            f"{where('dask_address')} = {address!r} is only used with task_runner 'dask', but "
            f"{where('task_runner')} is {runner!r}: set task_runner: dask, or unset dask_address"
        )
    elif address and not _valid_address(address):
        problems.append(
            f"{where('dask_address')} = {address!r} is not a Dask scheduler address: use "
            "tcp://host:8786 (or tls://host:port)"
        )
    if runner == "slurm" and not slurm:
        problems.append(
            f"{where('task_runner')} is 'slurm' but execution_config.slurm_cluster is unset: name "
            "the hcs-slurm-cluster block to submit with (docs/scale-out.md#slurm)"
        )
    if slurm and runner != "slurm":
        problems.append(
            f"{where('slurm_cluster')} = {slurm!r} is only used with task_runner 'slurm', but "
            f"{where('task_runner')} is {runner!r}: set task_runner: slurm, or unset slurm_cluster"
        )
    return ExecutionTarget(runner, address, slurm, problems)


def choose_runner(
    resolved: Any, in_process: str, functions: dict[str, str], memory_checkpoints: bool
) -> tuple[str, str, list[str]]:
    """(runner, why, problems) for a resolved config (`ResolvedConfig`).

    ``auto`` becomes ``dask``/``slurm`` when their address/block is set, ``threads`` for one
    worker, and ``processes`` for several, unless the run needs the flow's own process: a plate
    or output on OMERO (its connection) or in ``memory://``, a function process workers cannot import (defined in
    ``__main__`` or inside a function) or checkpoints kept in memory. Processes by default because
    scipy.ndimage and scikit-image hold the GIL, so threads of one process barely run them in
    parallel (measured in benchmarks/README.md).

    Args:
        resolved: the pipeline-level resolved config.
        in_process: why the plate or the output exists only in the flow's process ("" if not:
            an OMERO connection, or ``memory://``).
        functions: {function name: "module:qualname"} of every function the pipeline calls.
        memory_checkpoints: a step writes checkpoints with ``materialization_backend: memory``.
    """
    requested = str(getattr(resolved.value("execution_config.task_runner"), "value", None)
                    or resolved.value("execution_config.task_runner"))  # fmt: skip
    blockers = _needs_flow_process(in_process, functions, memory_checkpoints)
    if requested != "auto":
        problems = []
        if requested == "processes" and blockers:
            source = resolved.source("execution_config.task_runner").describe()
            problems.append(
                f"execution_config.task_runner ({source}) is 'processes', but {blockers[0]}: "
                "set task_runner: threads (or auto)"
            )
        return requested, "set in execution_config.task_runner", problems
    if _text(resolved.value("execution_config.dask_address")):
        return "dask", "auto: execution_config.dask_address is set", []
    if _text(resolved.value("execution_config.slurm_cluster")):
        return "slurm", "auto: execution_config.slurm_cluster is set", []
    workers = int(resolved.value("num_workers"))
    if workers == 1:
        return "threads", "auto: one worker runs in the flow's process", []
    if blockers:
        return "threads", f"auto: threads because {blockers[0]}", []
    return "processes", f"auto: {workers} workers run in worker processes (no shared GIL)", []


def _needs_flow_process(
    in_process: str, functions: dict[str, str], memory_checkpoints: bool
) -> list[str]:
    """Why the wells must run in the flow's process (empty: worker processes can run them)."""
    why = [in_process] if in_process else []
    if "forkserver" not in multiprocessing.get_all_start_methods():
        why.append("this platform cannot start worker processes from a forkserver (Windows)")
    for name, ref in sorted(functions.items()):
        module, _, qualname = ref.partition(":")
        if module == "__main__" or "<locals>" in qualname:
            where = "__main__" if module == "__main__" else f"a function body ({qualname})"
            why.append(
                f"function {name!r} is defined in {where}, which worker processes cannot "
                "import (move it to an importable module)"
            )
    if memory_checkpoints:
        why.append("checkpoints are kept in memory (vfs_config.materialization_backend: memory)")
    return why


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).strip() or None


def _valid_address(address: str) -> bool:
    parts = urlsplit(address)
    if parts.scheme not in DASK_SCHEMES or parts.path not in ("", "/"):
        return False
    if parts.scheme == "inproc":
        return bool(parts.netloc)
    try:
        port = parts.port
    except ValueError:
        return False
    return bool(parts.hostname) and (port is None or 0 < port < 65536)
