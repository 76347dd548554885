"""The `process-screen` flow: one `process-plate` deployment run per plate, then a summary.

Each plate is its own flow run (started with `run_deployment(..., as_subflow=True)`), so a plate
fails, shows its logs and is retried alone (`prefect flow-run retry <plate run>`); the screen run
waits for every plate to end and fails only then, naming each plate that did not complete.
Retrying the screen run itself re-schedules only its failed plate runs: the per-plate
idempotency key (screen run id + plate URL) makes the retry find the runs it already started.
"""

from __future__ import annotations

import time
from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Scheduled

from prefect_hcs.pipeline.secrets import PlainMapping, PlainStr
from prefect_hcs.runtime.guard import guarded_flow

#: The `process-plate` deployment that `prefect-hcs serve` and deployments/prefect.yaml create.
PLATE_DEPLOYMENT = "process-plate/hcs"
_NOT_OK = ("FAILED", "CRASHED", "CANCELLED", "CANCELLING")


class ScreenRunError(RuntimeError):
    """Some plates did not complete; the message lists each with its state and reason."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows
        bad = [r for r in rows if r["state"] != "completed"]
        lines = [f"  - {r['plate']}: {r['state']} ({r['reason']})" for r in bad[:20]]
        more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
        super().__init__(
            f"{len(bad)} of {len(rows)} plate(s) did not complete:\n" + "\n".join(lines) + more
        )


def _screen_run_name() -> str:
    from prefect.runtime import flow_run

    plates = flow_run.parameters.get("plates") or []
    return f"screen-{len(plates)}-plates"


def _short(text: str | None, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plate_row(plate: str, run: FlowRun) -> dict[str, Any]:
    """One summary row: the plate, its run and how it ended (completed/failed/crashed/...)."""
    state = run.state
    kind = state.type.value.lower() if state else "unknown"
    ok = kind == "completed"
    return {
        "plate": plate,
        "state": kind,
        "reason": "" if ok else _short(state.message if state else "no state"),
        "flow_run": run.name,
        "flow_run_id": str(run.id),
    }


def _wait(ids: list[UUID], poll_seconds: float, timeout_seconds: float) -> dict[UUID, FlowRun]:
    """Poll until every run is final (or the screen's own timeout); returns the last reads."""
    deadline = time.monotonic() + timeout_seconds
    runs: dict[UUID, FlowRun] = {}
    with get_client(sync_client=True) as client:
        while True:
            runs = {i: client.read_flow_run(i) for i in ids}
            if all(r.state and r.state.is_final() for r in runs.values()):
                return runs
            if time.monotonic() >= deadline:
                return runs
            time.sleep(poll_seconds)


def _reschedule_failed(runs: list[FlowRun]) -> list[FlowRun]:
    """On a retry of the screen: send the plate runs that ended badly back to Scheduled."""
    again = [r for r in runs if r.state and r.state.type.value in _NOT_OK]
    with get_client(sync_client=True) as client:
        for r in again:
            client.set_flow_run_state(r.id, Scheduled(), force=True)
    return again


@guarded_flow(name="process-screen", flow_run_name=_screen_run_name, validate_parameters=True)
def process_screen(
    plates: list[PlainStr],
    pipeline: PlainStr | PlainMapping | None = "demo",
    global_config: PlainStr | None = None,
    pipeline_config: PlainStr | None = None,
    storage_options: PlainMapping | None = None,
    plate_deployment: str = PLATE_DEPLOYMENT,
    overwrite: bool = False,
    poll_seconds: float = 5.0,
    timeout_seconds: float = 7 * 24 * 3600.0,
    output_storage_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Process a list of plates (URLs), one `plate_deployment` run each; fail if any plate failed.

    Config crosses to the plate runs as Block names (`global_config`, `pipeline_config`) and the
    pipeline as a name or document, exactly as given here.
    """
    from prefect.runtime import flow_run

    logger = get_run_logger()
    if len(set(plates)) != len(plates):
        raise ValueError("plates: the same plate URL is listed twice")
    screen_id = flow_run.id
    retrying = (flow_run.run_count or 1) > 1
    started: list[tuple[str, FlowRun]] = []
    for plate in plates:
        params = {
            "plate": plate,
            "pipeline": pipeline,
            "global_config": global_config,
            "pipeline_config": pipeline_config,
            "storage_options": storage_options,
            "overwrite": overwrite,
        }
        if output_storage_options is not None:
            params["output_storage_options"] = output_storage_options
        # sync_compatible: called from this synchronous flow it returns the FlowRun itself
        run = cast(
            FlowRun,
            run_deployment(
                plate_deployment,
                parameters=params,
                timeout=0,
                as_subflow=True,
                idempotency_key=f"screen-{screen_id}:{plate}",
            ),
        )
        started.append((plate, run))
    if retrying:
        again = _reschedule_failed([r for _, r in started])
        if again:
            logger.info("retry: re-scheduled %d failed plate run(s)", len(again))
    logger.info("started %d plate run(s) of %s", len(started), plate_deployment)
    final = _wait([r.id for _, r in started], poll_seconds, timeout_seconds)
    rows = [plate_row(plate, final[run.id]) for plate, run in started]
    create_table_artifact(
        rows,
        key=f"screen-{str(screen_id)[:8]}" if screen_id else "screen",
        description="Per-plate outcome of this screen run",
    )
    if any(r["state"] != "completed" for r in rows):
        raise ScreenRunError(rows)
    return rows
