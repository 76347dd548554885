"""Find failed or crashed plate runs through the Prefect API and run them again.

A deployment run is rescheduled in place (state Scheduled, forced), exactly like the UI's Retry
button: a worker or `serve` picks it up, and the flow resumes (wells whose outputs are complete and
valid are skipped). A run without a deployment is run again here with the same parameters; the old
run is tagged `hcs:retried` so it is not retried twice.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect_hcs.errors import UserFacingError

RETRIED_TAG = "hcs:retried"
PLATE_FLOW = "process-plate"


def parse_since(text: str | None) -> datetime | None:
    """'24h', '30m', '7d' or an ISO timestamp; None = no limit."""
    if not text:
        return None
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"s": timedelta(seconds=n), "m": timedelta(minutes=n), "h": timedelta(hours=n),
                 "d": timedelta(days=n)}[unit]  # fmt: skip
        return datetime.now(UTC) - delta
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UserFacingError(
            f"--since {text!r} is neither a duration (e.g. 24h, 30m, 7d) nor an ISO timestamp"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def find_failed_plate_runs(since: datetime | None = None, deployment: str | None = None) -> list:
    """Failed/crashed `process-plate` runs (newest first), not yet retried."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    run_filter = FlowRunFilter(
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
        ),
        start_time=FlowRunFilterStartTime(after_=since) if since else None,
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[PLATE_FLOW])),
            flow_run_filter=run_filter,
            deployment_filter=(
                DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
                if deployment
                else None
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=200,
        )
    return [r for r in runs if RETRIED_TAG not in (r.tags or [])]


def retry_plate_run(run: Any) -> dict[str, Any]:
    """Retry one run; returns {"flow_run", "plate", "action", "state"}."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    plate = (run.parameters or {}).get("plate")
    if run.deployment_id:
        with get_client(sync_client=True) as client:
            result = client.set_flow_run_state(
                run.id, Scheduled(message="Retried by prefect-hcs retry-failed"), force=True
            )
        return {"flow_run": str(run.id), "plate": plate, "action": "rescheduled",
                "state": str(result.status.value)}  # fmt: skip
    from prefect_hcs.runtime.flow import process_plate

    params = dict(run.parameters or {})
    state = process_plate(**params, return_state=True)
    with get_client(sync_client=True) as client:
        client.update_flow_run(run.id, tags=[*(run.tags or []), RETRIED_TAG])
    return {"flow_run": str(state.state_details.flow_run_id), "plate": plate,
            "action": "rerun", "state": state.type.value}  # fmt: skip
