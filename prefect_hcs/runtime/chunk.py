"""Execute a chunk of wells, every step of each, in whatever process runs it; no Prefect here.

The `run-steps` task calls `execute_chunk` in a flow thread (task_runner threads) or has a worker
process of `process_pool` call it (task_runner processes); either way it returns a picklable
`ChunkReport` that the task turns into Prefect's view: the outcome, error logs, or an error for
Prefect to retry.
"""

from __future__ import annotations

import os
import pickle
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect_hcs.errors import UserFacingError
from prefect_hcs.pipeline.plan import OutputPlan, StepPlan
from prefect_hcs.runtime import clusters
from prefect_hcs.runtime.results import ChunkOutcome, WellStepRun
from prefect_hcs.runtime.worker import StepFailedError, run_well_chain

_TRANSIENT = (TimeoutError, ConnectionError)


def is_transient(exc: BaseException | None) -> bool:
    """Worth retrying: I/O timeouts, dropped connections, anything marked `transient = True`."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, _TRANSIENT) or getattr(exc, "transient", False):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def reason(exc: BaseException) -> str:
    """`Type: message` of an error, as failures are listed per well."""
    return f"{type(exc).__name__}: {exc}"


class TransientStepError(RuntimeError):
    """A transient error of a worker process that could not be sent back as itself."""

    transient = True


@dataclass(frozen=True)
class WellFailure:
    """One well that failed: where, why, and the traceback to log (None for an input problem)."""

    well: str
    step: str
    message: str
    traceback: str | None


@dataclass
class ChunkReport:
    """What executing a chunk gave: its outcome, the failures to log, or an error to retry.

    `retry` is set when a transient error stopped the chunk before its last attempt: the task
    raises it (with `retry_step`) so that Prefect retries the task run.
    """

    outcome: ChunkOutcome
    logged: list[WellFailure] = field(default_factory=list)
    seconds: float = 0.0
    per_step: dict[str, float] = field(default_factory=dict)
    retry: BaseException | None = None
    retry_step: str = ""


def execute_chunk(
    plans: list[StepPlan],
    output: OutputPlan,
    storage_options: dict[str, Any],
    lease_check: Callable[[], None] | None,
    attempt_key: str,
    last_attempt: bool,
    where: dict[str, Any] | None = None,
) -> ChunkReport:
    """Run every step of every well of a chunk, each well's steps in order.

    A deterministic failure fails only its well (at the step that failed); a transient one stops
    the chunk and is returned as `ChunkReport.retry`, unless this is the last attempt, when it
    too fails only its well. `lease_check` runs before each step (the flow's output lease);
    `where` is where the chunk runs (default: `clusters.where()` of this process).
    """
    start = time.perf_counter()
    where = where if where is not None else clusters.where()
    report = ChunkReport(outcome=ChunkOutcome())
    results: list[WellStepRun] = []
    failures: dict[str, str] = {}
    failed_steps: dict[str, str] = {}
    for well, chain in _by_well(plans).items():
        try:
            done = run_well_chain(
                chain, output, storage_options, lease_check, attempt_key=attempt_key, where=where
            )
        except StepFailedError as failed:
            if is_transient(failed.error) and not last_attempt:
                report.retry, report.retry_step = _sendable(failed.error), failed.step
                break
            failures[well] = reason(failed.error)
            failed_steps[well] = failed.step
            report.logged.append(_failure(well, failed))
            continue
        for r in done:
            report.per_step[r.step] = report.per_step.get(r.step, 0.0) + r.seconds
        results.extend(done)
    report.seconds = time.perf_counter() - start
    report.outcome = ChunkOutcome(
        results=tuple(results),
        failures=failures,
        failed_steps=failed_steps,
        pid=os.getpid(),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return report


def _by_well(plans: list[StepPlan]) -> dict[str, list[StepPlan]]:
    by_well: dict[str, list[StepPlan]] = {}
    for p in sorted(plans, key=lambda p: p.step_index):
        by_well.setdefault(p.well, []).append(p)
    return by_well


def _failure(well: str, failed: StepFailedError) -> WellFailure:
    """The log entry of a failed well: a traceback for bugs; an input problem is its message."""
    error = failed.error
    trace = (
        None if isinstance(error, UserFacingError) else "".join(traceback.format_exception(error))
    )
    return WellFailure(well=well, step=failed.step, message=str(error), traceback=trace)


def _sendable(error: BaseException) -> BaseException:
    """`error` if it survives pickling (to leave a worker process), else a transient stand-in."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any error type may refuse to pickle
        return TransientStepError(reason(error))
    return error
