"""The Prefect tasks of a plate run: compile, prepare, run a chunk's steps, check, finalize.

Each task only executes what its frozen plan says (the work itself is in `worker`,
`plate_outputs` and `resume`, which import no Prefect). Transient errors (timeouts, dropped
connections, anything marked ``transient = True``) fail the task so that Prefect retries it;
any other error of a well fails only that well.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as prefect_flow_run
from prefect.runtime import task_run as prefect_task_run
from prefect.utilities.annotations import quote

from prefect_hcs.pipeline.plan import OutputPlan, PlatePlan, StepPlan
from prefect_hcs.runtime import clusters, process_pool, run_guard
from prefect_hcs.runtime.chunk import execute_chunk, is_transient
from prefect_hcs.runtime.compile import compile_from_parameters
from prefect_hcs.runtime.plate_outputs import finalize_outputs, prepare_outputs
from prefect_hcs.runtime.plate_steps import run_plate_steps
from prefect_hcs.runtime.results import ChunkOutcome
from prefect_hcs.runtime.resume import completed_wells

T = TypeVar("T")


def quoted(value: T) -> T:
    """``quote(value)``, typed as what the task receives.

    Prefect unwraps a quote before calling the task (which then gets ``value`` without Prefect
    walking its fields); its type stubs only know the wrapper, ``quote[T]``.
    """
    return cast(T, quote(value))


def retry_transient_only(task_obj: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a task run only when what it raised is transient."""
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # noqa: BLE001 - classify whatever the task raised
        return is_transient(exc)
    return False


@task(name="compile-plan", cache_policy=NO_CACHE)
def compile_plan_task(
    plate: str,
    pipeline: Any,
    global_config: str | None,
    pipeline_config: str | None,
    storage_options: dict[str, Any] | None,
    output_storage_options: dict[str, Any] | None = None,
) -> PlatePlan:
    """Discover the plate and compile every (well, step) plan; fails before any pixel is read."""
    return compile_from_parameters(
        plate, pipeline, global_config, pipeline_config, storage_options, output_storage_options
    )


@task(name="prepare-outputs", cache_policy=NO_CACHE)
def prepare_outputs_task(
    output: OutputPlan, plate_id: str, wells: tuple[str, ...], overwrite: bool
) -> None:
    """Write the OME-Zarr plate and well metadata once, before the per-well fan-out."""
    run_guard.assert_lease_held(output)
    prepare_outputs(output, plate_id, wells, overwrite)


@task(name="run-steps", cache_policy=NO_CACHE)
def run_chunk_task(
    plans: list[StepPlan], output: OutputPlan, storage_options: dict[str, Any]
) -> ChunkOutcome:
    """Execute every step of a chunk of wells: each well's steps in order, pixels kept in memory.

    One task run per chunk instead of one per chunk and step: each task run costs Prefect state
    round-trips, and steps of one well then hand their arrays over without serialising them.
    With ``task_runner: processes`` the chunk runs in a worker process of the run's pool (this
    task waits for it in a flow thread), else in this thread (`chunk.execute_chunk`).
    Failures and retries: a deterministic failure fails only its well (at the step that
    failed); a transient one fails the task so Prefect retries it, and wells finished in this
    process are not recomputed on the retry. On the last attempt a transient failure also fails
    only its well: one unreachable well does not take the rest of its chunk down with it.
    """
    logger = get_run_logger()
    attempt = str(prefect_task_run.id or "")  # the same across retries of this task run
    pool = process_pool.pool_of(str(prefect_flow_run.id or ""))
    if pool is None:
        report = execute_chunk(
            plans, output, storage_options, lambda: run_guard.assert_lease_held(output),
            attempt, _last_attempt(), clusters.where(),
        )  # fmt: skip
    else:
        wells = sorted({p.well for p in plans})
        report = pool.run(
            f"{wells[0]}–{wells[-1]}", plans, output, storage_options,
            run_guard.worker_lease_check(output), attempt, _last_attempt(), None,
        )  # fmt: skip
    for f in report.logged:
        logger.error("well %s, step %s failed: %s%s", f.well, f.step, f.message,
                     f"\n{f.traceback}" if f.traceback else "")  # fmt: skip
    if report.retry is not None:
        report.retry.hcs_step = report.retry_step  # type: ignore[attr-defined]
        raise report.retry
    failed = len(report.outcome.failures)
    logger.info(
        "%d well(s) in %.2f s (pid %d, peak RSS %.0f MB): %s%s",
        len({r.well for r in report.outcome.results}),
        report.seconds,
        report.outcome.pid,
        report.outcome.peak_rss_mb,
        ", ".join(f"{s} {t:.2f} s" for s, t in report.per_step.items()),
        f"; {failed} failed" if failed else "",
    )
    return report.outcome


def _last_attempt() -> bool:
    """Whether this run of the task is its last (no Prefect retry left).

    A transient error then fails only its well, like any other error: the chunk's other wells
    still run, and those done before it are not reported as failed.
    """
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is None:
        return True
    return ctx.task_run.run_count > ctx.task.retries


@task(name="plate-step", cache_policy=NO_CACHE)
def plate_steps_task(plan: PlatePlan, storage_options: dict[str, Any]) -> list[str]:
    """The plate-level steps of a run (e.g. the illumination estimate), before any well step."""
    done = run_plate_steps(plan, storage_options)
    for line in done:
        get_run_logger().info("plate-level step %s", line)
    return done


@task(name="check-completed", cache_policy=NO_CACHE)
def check_completed_task(plan: PlatePlan, storage_options: dict[str, Any]) -> list[str]:
    """Wells whose outputs are complete and valid for this very plan and these input files."""
    return sorted(completed_wells(plan, storage_options))


@task(name="finalize-outputs", cache_policy=NO_CACHE)
def finalize_outputs_task(
    output: OutputPlan,
    plans: list[StepPlan],
    storage_options: dict[str, Any],
    summary: dict[str, Any],
) -> dict[str, str]:
    """Merge per-well tables into plate tables and mark the output plate complete."""
    run_guard.assert_lease_held(output)
    return finalize_outputs(output, plans, storage_options, summary)
