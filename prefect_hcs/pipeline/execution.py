"""Where a plate run executes, checked at compile time: threads, Dask (local or an address), SLURM.

`execution_target` reads `execution_config.task_runner`, `dask_address` and `slurm_cluster`
from the resolved config and returns them with every inconsistency as a message naming the
field, the layer that set it and the fix — so a typo fails `prefect-hcs plan` and the flow's
compile step, not the cluster connection at well 217.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
