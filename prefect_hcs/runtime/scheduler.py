"""The flow-side scheduler: one `run-steps` task per chunk, at most `num_workers` in flight.

Runs in the flow process; it hears of every finished chunk first, so progress is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect.futures import as_completed

from prefect_hcs.pipeline.plan import PlatePlan, StepPlan
from prefect_hcs.runtime import progress
from prefect_hcs.runtime.chunk import reason
from prefect_hcs.runtime.monitoring import PlateMonitor
from prefect_hcs.runtime.tasks import quoted, retry_transient_only, run_chunk_task


def wells_label(wells: tuple[str, ...] | list[str]) -> str:
    """How a chunk task names its wells: `A01` or `A01–A03 (3 wells)`."""
    return wells[0] if len(wells) == 1 else f"{wells[0]}–{wells[-1]} ({len(wells)} wells)"


def steps_label(steps: tuple[str, ...] | list[str]) -> str:
    """How a chunk task names the steps it runs: `project→count` (one step: its name)."""
    return steps[0] if len(steps) == 1 else f"{steps[0]}→{steps[-1]}"


@dataclass
class ChunkTotals:
    """What the chunks of a run gave: completed wells, failures, where each ran, worker memory."""

    done_wells: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    placement: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    peak_rss_mb: dict[int, float] = field(default_factory=dict)


def run_chunks(
    plan: PlatePlan,
    by_chunk: dict[int, list[StepPlan]],
    opts: dict[str, Any],
    runner: Any,
    monitor: PlateMonitor | None = None,
) -> ChunkTotals:
    """The flow-side scheduler: one task per chunk, at most `num_workers` of them in flight.

    `runner` is a started task runner to submit to (Dask), or None for the flow's own runner;
    `monitor` hears of every finished chunk (in this process, so progress is exact).
    Returns the completed wells, {well: failure}, {well: where each step ran
    (clusters.where)} and {pid: peak RSS in MB} of the processes that ran chunks.
    """
    totals = ChunkTotals()
    failures, done_wells, pids = totals.failures, totals.done_wells, totals.placement
    pending: dict[Any, int] = {}
    label = steps_label(plan.steps)
    queue = sorted(by_chunk)

    def wells_of(chunk: int) -> list[str]:
        return list(dict.fromkeys(p.well for p in by_chunk[chunk]))

    def submit(chunk: int) -> Any:
        t = run_chunk_task.with_options(
            task_run_name=f"{label} · {wells_label(wells_of(chunk))}",
            retries=plan.retries,
            retry_delay_seconds=[
                plan.retry_delay_seconds * 2**k for k in range(max(1, plan.retries))
            ],
            retry_condition_fn=retry_transient_only,
        )
        if runner is not None:  # prefect-dask hands a quote() over still wrapped: plain values
            params = {"plans": by_chunk[chunk], "output": plan.output, "storage_options": opts}
            return runner.submit(t, parameters=params)
        return t.submit(quoted(by_chunk[chunk]), quoted(plan.output), opts)

    def fill() -> None:
        while queue and len(pending) < plan.num_workers:
            chunk = queue.pop(0)
            pending[submit(chunk)] = chunk

    fill()
    while pending:
        fut = next(iter(as_completed(list(pending))))
        wells = wells_of(pending.pop(fut))
        try:
            outcome = fut.result(raise_on_failure=True)
        except BaseException as exc:  # noqa: BLE001 - a task that failed as a whole (transient)
            step = getattr(exc, "hcs_step", label)
            new_failures = {w: (step, reason(exc)) for w in wells}
        else:
            for r in outcome.results:
                pids.setdefault(r.well, []).append({"step": r.step, **r.where})
            rss = totals.peak_rss_mb
            rss[outcome.pid] = max(rss.get(outcome.pid, 0.0), round(outcome.peak_rss_mb, 1))
            new_failures = {
                w: (outcome.failed_steps.get(w, label), why) for w, why in outcome.failures.items()
            }
            if monitor is not None:
                monitor.step_results(outcome.results)
        for w, (step, why) in new_failures.items():
            failures[w] = f"step {step!r}: {why}"
            if monitor is not None:
                monitor.well_failed(w, step, why)
        survivors = [w for w in wells if w not in failures]
        if len(survivors) < len(wells):
            progress.emit({"event": "chunk-failed", "wells": len(wells) - len(survivors)})
        if survivors:
            done_wells.extend(survivors)
            progress.emit({"event": "chunk-done", "wells": len(survivors)})
            if monitor is not None:
                monitor.wells_done(survivors)
        fill()
    totals.placement = dict(sorted(pids.items()))
    return totals
