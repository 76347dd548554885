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

import contextlib
import time
from typing import Any

from prefect import get_run_logger

from prefect_hcs.errors import UserFacingError
from prefect_hcs.pipeline.plan import PlatePlan, StepPlan
from prefect_hcs.pipeline.secrets import PlainMapping, PlainStr
from prefect_hcs.runtime import clusters, process_pool, progress, run_guard
from prefect_hcs.runtime.guard import guarded_flow
from prefect_hcs.runtime.monitoring import PlateMonitor
from prefect_hcs.runtime.plan_artifacts import publish_fingerprints
from prefect_hcs.runtime.scheduler import run_chunks
from prefect_hcs.runtime.tasks import (
    check_completed_task,
    compile_plan_task,
    finalize_outputs_task,
    plate_steps_task,
    prepare_outputs_task,
    quoted,
)


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
    if plan.task_runner == "processes":
        process_pool.prestart()  # its imports overlap preparing the outputs
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
    publish_fingerprints(plan)
    progress.emit({"event": "compiled", "wells": len(plan.wells), "tasks": plan.task_count})
    prepare_outputs_task.with_options(task_run_name="prepare-outputs" + label)(
        quoted(plan.output), plan.plate_id, plan.wells, overwrite
    )
    skipped = set(
        check_completed_task.with_options(task_run_name="check-completed" + label)(
            quoted(plan), opts
        )
    )
    if skipped:
        logger.info("resuming: %d well(s) already complete and valid, skipped", len(skipped))
        progress.emit({"event": "chunk-done", "wells": len(skipped)})
        monitor.wells_skipped(sorted(skipped))

    if plan.plate_steps and len(skipped) < len(plan.wells):
        plate_steps_task.with_options(task_run_name="plate-step" + label)(quoted(plan), opts)

    by_chunk: dict[int, list[StepPlan]] = {}
    chunk_of = {w: i for i, chunk in enumerate(plan.chunks) for w in chunk}
    for p in plan.step_plans:
        if p.well not in skipped:
            by_chunk.setdefault(chunk_of[p.well], []).append(p)

    with clusters.scale_out_runner(plan) as runner, _worker_pool(plan):
        totals = run_chunks(plan, by_chunk, opts, runner, monitor)
    done_wells, failures, pids = totals.done_wells, totals.failures, totals.placement

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
        "worker_peak_rss_mb": {str(pid): mb for pid, mb in sorted(totals.peak_rss_mb.items())},
        "seconds": round(time.perf_counter() - started, 2),
    }
    if failures:
        raise PlateRunError(plan.plate_id, failures)
    tables = finalize_outputs_task.with_options(task_run_name="finalize-outputs" + label)(
        quoted(plan.output), quoted(list(plan.step_plans)), opts, summary
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


def _worker_pool(plan: PlatePlan) -> contextlib.AbstractContextManager[Any]:
    """The run's worker processes (``task_runner: processes``), closed when the wells are done."""
    if plan.task_runner != "processes":
        return contextlib.nullcontext()
    from prefect.runtime import flow_run

    return process_pool.pool_for_run(str(flow_run.id or ""), plan.num_workers)


class PlateRunError(UserFacingError, RuntimeError):
    """Some wells failed; the message lists each failed well with its step and reason."""

    def __init__(self, plate_id: str, failures: dict[str, str]):
        self.failures = failures
        lines = [f"  - {w}: {why}" for w, why in list(failures.items())[:20]]
        more = f"\n  … and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(
            f"plate {plate_id}: {len(failures)} well(s) failed:\n" + "\n".join(lines) + more
        )
