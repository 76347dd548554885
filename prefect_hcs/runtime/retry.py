"""Find failed, crashed or dead plate runs through the Prefect API and run them again.

A run still RUNNING whose process is provably gone (see `dead_runs.why_dead`: its pid is dead on
this host, its output lease's heartbeat timed out, or it has been Running longer than
`--stuck-after`) is first set to Crashed, with its unfinished task runs, then retried like any
crashed run.

A deployment run is rescheduled in place (state Scheduled, forced), exactly like the UI's Retry
button: a worker or `serve` picks it up, and the flow resumes (wells whose outputs are complete and
valid are skipped). A run without a deployment is run again here with the same parameters; the old
run is tagged `hcs:retried` so it is not retried twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect_hcs.errors import UserFacingError

RETRIED_TAG = "hcs:retried"
PLATE_FLOW = "process-plate"


def parse_duration(text: str) -> timedelta | None:
    """'90s', '30m', '24h', '7d' as a timedelta; None if `text` is not such a duration."""
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return {"s": timedelta(seconds=n), "m": timedelta(minutes=n), "h": timedelta(hours=n),
            "d": timedelta(days=n)}[unit]  # fmt: skip


def parse_since(text: str | None) -> datetime | None:
    """'24h', '30m', '7d' or an ISO timestamp; None = no limit."""
    if not text:
        return None
    delta = parse_duration(text)
    if delta is not None:
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


def find_dead_plate_runs(
    since: datetime | None = None,
    deployment: str | None = None,
    stuck_after: timedelta | None = None,
) -> list[tuple[Any, str]]:
    """RUNNING `process-plate` runs whose process died, each with the proof."""
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

    from prefect_hcs.runtime.dead_runs import why_dead

    run_filter = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
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
    found = []
    for run in runs:
        reason = why_dead(run, stuck_after)
        if reason is not None:
            found.append((run, reason))
    return found


def crash_dead_run(run: Any, reason: str) -> Any:
    """Mark a dead RUNNING run Crashed (and its unfinished task runs); return it re-read."""
    from prefect.client.orchestration import get_client

    from prefect_hcs.runtime.dead_runs import mark_crashed

    mark_crashed(run.id, f"the run's process died ({reason}); marked by prefect-hcs retry-failed")
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run.id)


def retry_plate_run(run: Any) -> dict[str, Any]:
    """Retry one run; returns {"flow_run", "plate", "action", "state"}."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas import OrchestrationResult
    from prefect.states import Scheduled

    plate = (run.parameters or {}).get("plate")
    if run.deployment_id:
        with get_client(sync_client=True) as client:
            result: OrchestrationResult[Any] = client.set_flow_run_state(
                run.id, Scheduled(message="Retried by prefect-hcs retry-failed"), force=True
            )
        return {"flow_run": str(run.id), "plate": plate, "action": "rescheduled",
                "state": str(result.status.value)}  # fmt: skip
    from prefect_hcs.runtime.dead_runs import replay_parameters
    from prefect_hcs.runtime.flow import process_plate

    params = replay_parameters(run)  # local paths as recorded, absolute
    plate = params.get("plate", plate)
    state = process_plate(**params, return_state=True)
    with get_client(sync_client=True) as client:
        client.update_flow_run(run.id, tags=[*(run.tags or []), RETRIED_TAG])
    return {"flow_run": str(state.state_details.flow_run_id), "plate": plate,
            "action": "rerun", "state": state.type.value}  # fmt: skip


def run_retry_failed(
    since: str | None,
    deployment: str | None,
    dry_run: bool,
    stuck_after: str | None,
    say: Callable[[str], None],
) -> int:
    """The `retry-failed` command: returns how many retries run here did not complete."""
    from prefect_hcs.runtime.api import ensure_api

    after = parse_since(since)
    stuck = parse_duration(stuck_after) if stuck_after else None
    if stuck_after and stuck is None:
        raise UserFacingError(f"--stuck-after {stuck_after!r} is not a duration (e.g. 30m, 12h)")
    ensure_api()
    dead = find_dead_plate_runs(after, deployment, stuck)
    for run, reason in dead:
        if dry_run:
            say(f"would mark {run.name} ({run.id}) Crashed and retry it: {reason}")
        else:
            crash_dead_run(run, reason)
            say(f"marked {run.name} ({run.id}) Crashed: {reason}")
    runs = find_failed_plate_runs(after, deployment)
    if dry_run:
        runs = [*runs, *(r for r, _ in dead if r.id not in {x.id for x in runs})]
    if not runs:
        say("no failed, crashed or dead plate runs to retry")
        return 0
    failed = 0
    for run in runs:
        plate = replay_parameters_plate(run)
        if dry_run:
            say(f"would retry {run.name} ({run.id}, {run.state_type.value}): {plate}")
            continue
        outcome = retry_plate_run(run)
        say(f"{outcome['action']} {run.name} → {outcome['flow_run']}: {outcome['state']}")
        if outcome["action"] == "rerun" and outcome["state"] != "COMPLETED":
            failed += 1
    return failed


def replay_parameters_plate(run: Any) -> Any:
    """The plate a retry would process (absolute when it was recorded)."""
    from prefect_hcs.runtime.dead_runs import replay_parameters

    return replay_parameters(run).get("plate")
