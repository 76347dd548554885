"""The `process-plate` flow: compile every step plan first, then run steps as Prefect tasks.

One task runs every step over one chunk of wells (chunks are sized at compile time so a plate
run stays within `execution_config.max_task_runs`): a well's steps hand their arrays over in
memory, and a plate costs one task run per chunk, not per chunk and step. Tasks receive their
frozen plans `quote`d, so Prefect does not walk every field of every plan (seconds per task on a
384-well plate) looking for futures. The flow keeps at most `num_workers` tasks in flight, so
memory stays bounded and every worker stays busy. What the Prefect UI shows of a run (flow-run
tags, progress, artifacts, `prefect-hcs.*` events) comes from `monitoring.PlateMonitor`, driven
from this flow process only.
"""

from __future__ import annotations

import os
import time
from typing import Any, TypeVar, cast

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import task_run as prefect_task_run
from prefect.utilities.annotations import quote

from prefect_hcs.errors import UserFacingError
from prefect_hcs.pipeline.plan import OutputPlan, PlatePlan, StepPlan
from prefect_hcs.pipeline.secrets import PlainMapping, PlainStr
from prefect_hcs.runtime import clusters, progress, run_guard
from prefect_hcs.runtime import worker as hw
from prefect_hcs.runtime.compile import compile_from_parameters
from prefect_hcs.runtime.guard import guarded_flow
from prefect_hcs.runtime.monitoring import PlateMonitor
from prefect_hcs.runtime.plate_steps import plate_steps_task
from prefect_hcs.runtime.results import ChunkOutcome, WellStepRun

_TRANSIENT = (TimeoutError, ConnectionError)


T = TypeVar("T")


def _quoted(value: T) -> T:
    """``quote(value)``, typed as what the task receives.

    Prefect unwraps a quote before calling the task (which then gets ``value`` without Prefect
    walking its fields); its type stubs only know the wrapper, ``quote[T]``.
    """
    return cast(T, quote(value))


def is_transient(exc: BaseException | None) -> bool:
    """Worth retrying: I/O timeouts, dropped connections, anything marked `transient = True`."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, _TRANSIENT) or getattr(exc, "transient", False):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _retry_transient_only(task_obj: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # noqa: BLE001 - classify whatever the task raised
        return is_transient(exc)
    return False


def _slug(text: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in text)
    return "-".join(p for p in out.split("-") if p)[:60] or "plate"


def _wells_label(wells: tuple[str, ...] | list[str]) -> str:
    return wells[0] if len(wells) == 1 else f"{wells[0]}–{wells[-1]} ({len(wells)} wells)"


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
    hw.prepare_outputs(output, plate_id, wells, overwrite)


@task(name="run-steps", cache_policy=NO_CACHE)
def run_chunk_task(
    plans: list[StepPlan], output: OutputPlan, storage_options: dict[str, Any]
) -> ChunkOutcome:
    """Execute every step of a chunk of wells: each well's steps in order, pixels kept in memory.

    One task run per chunk instead of one per chunk and step: each task run costs Prefect state
    round-trips, and steps of one well then hand their arrays over without serialising them.
    Failures and retries behave as in `run_step_task`: a deterministic failure fails only its
    well (at the step that failed), a transient one fails the task so Prefect retries it; wells
    finished in this process are not recomputed on the retry.
    """
    logger = get_run_logger()
    results: list[WellStepRun] = []
    failures: dict[str, str] = {}
    failed_steps: dict[str, str] = {}
    per_step: dict[str, float] = {}
    start = time.perf_counter()
    by_well: dict[str, list[StepPlan]] = {}
    for p in sorted(plans, key=lambda p: p.step_index):
        by_well.setdefault(p.well, []).append(p)
    where = clusters.where()
    attempt = str(prefect_task_run.id or "")  # the same across retries of this task run
    for well, chain in by_well.items():
        try:
            done = hw.run_well_chain(
                chain,
                output,
                storage_options,
                lambda: run_guard.assert_lease_held(output),
                attempt_key=attempt,
            )
        except hw.StepFailedError as failed:
            if is_transient(failed.error):
                failed.error.hcs_step = failed.step  # type: ignore[attr-defined]
                raise failed.error  # noqa: B904 - the original error, for Prefect's retry
            failures[well] = _reason(failed.error)
            failed_steps[well] = failed.step
            logger.error(  # a traceback for bugs; an input problem is its message
                "well %s, step %s failed: %s",
                well,
                failed.step,
                failed.error,
                exc_info=failed.error if not isinstance(failed.error, UserFacingError) else None,
            )
            continue
        for r in done:
            per_step[r.step] = per_step.get(r.step, 0.0) + r.seconds
            results.append(WellStepRun(well=r.well, step=r.step, seconds=r.seconds,
                                       tables=r.tables, pid=os.getpid(), where=where))  # fmt: skip
    logger.info(
        "%d well(s) in %.2f s (pid %d): %s%s",
        len(by_well) - len(failures),
        time.perf_counter() - start,
        os.getpid(),
        ", ".join(f"{s} {t:.2f} s" for s, t in per_step.items()),
        f"; {len(failures)} failed" if failures else "",
    )
    return ChunkOutcome(results=tuple(results), failures=failures, failed_steps=failed_steps)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@task(name="check-completed", cache_policy=NO_CACHE)
def check_completed_task(plan: PlatePlan, storage_options: dict[str, Any]) -> list[str]:
    """Wells whose outputs are complete and valid for this very plan and these input files."""
    return sorted(hw.completed_wells(plan, storage_options))


@task(name="finalize-outputs", cache_policy=NO_CACHE)
def finalize_outputs_task(
    output: OutputPlan,
    plans: list[StepPlan],
    storage_options: dict[str, Any],
    summary: dict[str, Any],
) -> dict[str, str]:
    """Merge per-well tables into plate tables and mark the output plate complete."""
    run_guard.assert_lease_held(output)
    return hw.finalize_outputs(output, plans, storage_options, summary)


def _publish_fingerprints(plan: PlatePlan) -> None:
    """Fingerprint artifacts: what end-to-end checks compare across machines and runs."""
    create_markdown_artifact(
        _plan_markdown(plan),
        key=_slug(f"plan-fingerprints-{plan.plate_id}"),
        description="Plan fingerprints (identical wherever the same inputs are compiled)",
    )
    create_table_artifact(
        fingerprint_rows(plan),
        key=fingerprints_key(plan.plate_id),
        description="Machine-readable fingerprints: the plan, then every well/step",
    )


def fingerprints_key(plate_id: str) -> str:
    """Artifact key of the full fingerprints table (what end-to-end checks read back)."""
    return _slug(f"fingerprints-{plate_id}")


def fingerprint_rows(plan: PlatePlan) -> list[dict[str, str]]:
    """[{"item": "plan", ...}, {"item": "<well>/<step>", ...}]: full-length, unabridged."""
    rows = [{"item": "plan", "fingerprint": plan.fingerprint}]
    rows += [{"item": k, "fingerprint": v} for k, v in plan.fingerprints().items()]
    return rows


def _plan_markdown(plan: PlatePlan) -> str:
    lines = [
        f"# Plan of `{plan.plate_id}`",
        "",
        f"- plan fingerprint: `{plan.fingerprint}`",
        f"- pipeline: `{plan.pipeline_name}` · {len(plan.wells)} wells · {len(plan.steps)} steps "
        f"· {len(plan.chunks)} chunks · {plan.task_count} task runs",
        f"- output: `{plan.output.zarr_url or plan.output.root}`",
        f"- intermediates in memory: {plan.intermediates_in_memory}",
    ]
    if len(plan.step_plans) <= 400:
        lines += ["", "| well/step | fingerprint |", "|---|---|"]
        lines += [f"| {k} | `{v[:16]}` |" for k, v in plan.fingerprints().items()]
    return "\n".join(lines)


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    plate = str(flow_run.parameters.get("plate", "plate")).rstrip("/")
    return f"plate-{plate.rsplit('/', 1)[-1]}"


@guarded_flow(name="process-plate", flow_run_name=_flow_run_name, validate_parameters=True)
def process_plate(
    plate: PlainStr,
    pipeline: PlainStr | PlainMapping | None = "demo",
    global_config: PlainStr | None = None,
    pipeline_config: PlainStr | None = None,
    storage_options: PlainMapping | None = None,
    overwrite: bool = False,
    output_storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Process one plate: compile all plans, prepare outputs, run steps per chunk, finalize.

    `global_config` and `pipeline_config` are Block names (or YAML file paths); `pipeline` is a
    built-in name, a YAML/JSON document or a mapping; `storage_options` go to the plate's
    filesystem and must not hold secrets (name a credentials Block: ``credentials_block``);
    `output_storage_options` go to every output's (None: the plate's, if on the same kind of
    store). See docs/scale-out.md.
    """
    monitor = PlateMonitor(plate)
    try:
        summary = _process(
            monitor,
            plate,
            pipeline,
            global_config,
            pipeline_config,
            storage_options,
            overwrite,
            output_storage_options,
        )
    except Exception as exc:
        monitor.failed(exc)
        raise
    finally:
        run_guard.release_output_lease()
    monitor.completed(summary)
    return summary


def _process(
    monitor: PlateMonitor,
    plate: str,
    pipeline: str | dict[str, Any] | None,
    global_config: str | None,
    pipeline_config: str | None,
    storage_options: dict[str, Any] | None,
    overwrite: bool,
    output_storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of `process_plate`; `monitor` mirrors its progress in the Prefect UI."""
    logger = get_run_logger()
    started = time.perf_counter()
    opts = dict(storage_options or {})
    params = {"plate": plate, "pipeline": pipeline, "global_config": global_config,
              "pipeline_config": pipeline_config}  # fmt: skip
    run_guard.record_parameters(params)
    plan = compile_plan_task.with_options(task_run_name=f"compile-plan · {monitor.plate_id}")(
        plate, pipeline, global_config, pipeline_config, opts, output_storage_options
    )
    clusters.preflight(plan)  # an unusable cluster fails here, before any output is written
    label = f" · {plan.plate_id}"  # plate-level task runs carry the plate in their names
    run_guard.take_output_lease(plan, params, logger)  # one owner per output, before any write
    logger.info(
        "compiled %d wells × %d steps into %d chunks (%d task runs); plan %s",
        len(plan.wells),
        len(plan.steps),
        len(plan.chunks),
        plan.task_count,
        plan.fingerprint[:16],
    )
    for warning in plan.warnings:
        logger.warning("plate: %s", warning)
    monitor.start(plan, opts)
    _publish_fingerprints(plan)
    progress.emit(
        {"event": "compiled", "wells": len(plan.wells), "tasks": len(plan.steps) * len(plan.chunks)}
    )
    prepare_outputs_task.with_options(task_run_name="prepare-outputs" + label)(
        _quoted(plan.output), plan.plate_id, plan.wells, overwrite
    )
    skipped = set(
        check_completed_task.with_options(task_run_name="check-completed" + label)(
            _quoted(plan), opts
        )
    )
    if skipped:
        logger.info("resuming: %d well(s) already complete and valid, skipped", len(skipped))
        progress.emit({"event": "chunk-done", "wells": len(skipped)})
        monitor.wells_skipped(sorted(skipped))

    if plan.plate_steps and len(skipped) < len(plan.wells):
        plate_steps_task.with_options(task_run_name="plate-step" + label)(_quoted(plan), opts)

    by_chunk: dict[int, list[StepPlan]] = {}
    chunk_of = {w: i for i, chunk in enumerate(plan.chunks) for w in chunk}
    for p in plan.step_plans:
        if p.well not in skipped:
            by_chunk.setdefault(chunk_of[p.well], []).append(p)

    with clusters.scale_out_runner(plan) as runner:
        done_wells, failures, pids = _run_chunks(plan, by_chunk, opts, runner, monitor)

    summary: dict[str, Any] = {
        "plate_id": plan.plate_id,
        "plan_fingerprint": plan.fingerprint,
        "wells_completed": len(done_wells) + len(skipped),
        "wells_skipped": sorted(skipped),
        "wells_failed": len(failures),
        "failures": failures,
        "output": plan.output.zarr_url or plan.output.root,
        "task_runner": plan.task_runner,
        "cluster": clusters.describe(plan),
        "worker_pids": {w: sorted({p["pid"] for p in ps}) for w, ps in pids.items()},
        "placement": pids,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if failures:
        raise PlateRunError(plan.plate_id, failures)
    tables = finalize_outputs_task.with_options(task_run_name="finalize-outputs" + label)(
        _quoted(plan.output), _quoted(list(plan.step_plans)), opts, summary
    )
    summary["tables"] = tables
    summary["seconds"] = round(time.perf_counter() - started, 2)
    logger.info(
        "plate %s complete: %d wells in %.1f s",
        plan.plate_id,
        summary["wells_completed"],
        summary["seconds"],
    )
    return summary


def steps_label(steps: tuple[str, ...] | list[str]) -> str:
    """How a chunk task names the steps it runs: `project→count` (one step: its name)."""
    return steps[0] if len(steps) == 1 else f"{steps[0]}→{steps[-1]}"


def _run_chunks(
    plan: PlatePlan,
    by_chunk: dict[int, list[StepPlan]],
    opts: dict[str, Any],
    runner: Any,
    monitor: PlateMonitor | None = None,
) -> tuple[list[str], dict[str, str], dict[str, list[dict[str, Any]]]]:
    """The flow-side scheduler: one task per chunk, at most `num_workers` of them in flight.

    `runner` is a started task runner to submit to (Dask), or None for the flow's own runner;
    `monitor` hears of every finished chunk (in this process, so progress is exact).
    Returns (completed wells, {well: failure}, {well: where each step ran (clusters.where)}).
    """
    failures: dict[str, str] = {}
    pending: dict[Any, int] = {}
    done_wells: list[str] = []
    pids: dict[str, list[dict[str, Any]]] = {}
    label = steps_label(plan.steps)
    queue = sorted(by_chunk)

    def wells_of(chunk: int) -> list[str]:
        return list(dict.fromkeys(p.well for p in by_chunk[chunk]))

    def submit(chunk: int) -> Any:
        t = run_chunk_task.with_options(
            task_run_name=f"{label} · {_wells_label(wells_of(chunk))}",
            retries=plan.retries,
            retry_delay_seconds=[
                plan.retry_delay_seconds * 2**k for k in range(max(1, plan.retries))
            ],
            retry_condition_fn=_retry_transient_only,
        )
        if runner is not None:  # prefect-dask hands a quote() over still wrapped: plain values
            params = {"plans": by_chunk[chunk], "output": plan.output, "storage_options": opts}
            return runner.submit(t, parameters=params)
        return t.submit(_quoted(by_chunk[chunk]), _quoted(plan.output), opts)

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
            new_failures = {w: (step, _reason(exc)) for w in wells}
        else:
            for r in outcome.results:
                pids.setdefault(r.well, []).append({"step": r.step, **r.where})
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
    return done_wells, failures, dict(sorted(pids.items()))


class PlateRunError(UserFacingError, RuntimeError):
    """Some wells failed; the message lists each failed well with its step and reason."""

    def __init__(self, plate_id: str, failures: dict[str, str]):
        self.failures = failures
        lines = [f"  - {w}: {why}" for w, why in list(failures.items())[:20]]
        more = f"\n  … and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(
            f"plate {plate_id}: {len(failures)} well(s) failed:\n" + "\n".join(lines) + more
        )
