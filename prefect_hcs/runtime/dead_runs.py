"""Runs whose process died: recognise them, mark them Crashed, and say where they ran.

A SIGKILLed or OOM-killed flow process never reports its end, so Prefect keeps its flow run and
task runs RUNNING forever. Every plate run therefore records, as flow-run labels, where it runs
(host, pid and process start time), where its output lease is, and its parameters with local paths
made absolute. From those, `retry-failed` (and the next run into the same output, which finds the
dead run's lease) can prove a run dead and set it, and its unfinished task runs, to Crashed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect_hcs.runtime import lease as leases

HOST, PID, PID_STARTED = "prefect-hcs.host", "prefect-hcs.pid", "prefect-hcs.pid-started"
LEASE, PARAMS = "prefect-hcs.lease", "prefect-hcs.params"
#: Parameters that may name local files; stored absolute so a retry works from any directory.
_PATH_PARAMS = ("plate", "pipeline", "global_config", "pipeline_config")


def absolute_parameters(params: dict[str, Any]) -> dict[str, str]:
    """The path-like parameters with local paths made absolute (URLs and names unchanged)."""
    out: dict[str, str] = {}
    for key in _PATH_PARAMS:
        value = params.get(key)
        if not isinstance(value, str) or "://" in value or "\n" in value:
            continue
        if key == "plate" or os.path.exists(value):
            out[key] = os.path.join(os.getcwd(), os.path.expanduser(value))  # '..' stays
    return out


def record_run(run_id: Any, params: dict[str, Any], lease_url: str | None = None) -> None:
    """Label the flow run with this process's identity, its lease and absolute parameters."""
    pid = os.getpid()
    labels: dict[str, Any] = {
        HOST: socket.gethostname(),
        PID: str(pid),
        PID_STARTED: str(leases.process_start(pid) or ""),
        PARAMS: json.dumps(absolute_parameters(params), sort_keys=True),
    }
    if lease_url:
        labels[LEASE] = lease_url
    _patch_labels(run_id, labels)


#: Pauses (s) before each retry of the labels PATCH. The server reads the run, then writes it: on
#: SQLite a write committed in between (the run's own state, its events) fails it at once with
#: "database is locked" (a snapshot conflict no busy timeout waits for), answered 503. Prefect's
#: client would back off 2 s, then 4 s, … for that; a retry a moment later succeeds.
LABEL_RETRY_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
#: Answers worth retrying (Prefect's client retries the same ones).
_RETRY_STATUS = (408, 429, 502, 503)


def _patch_labels(run_id: Any, labels: dict[str, Any]) -> None:
    """Merge `labels` into the flow run's, retrying a busy server after short pauses."""
    import time

    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with (
        temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}),
        get_client(sync_client=True) as client,
    ):
        for pause in (*LABEL_RETRY_PAUSES, None):
            try:
                client.update_flow_run_labels(run_id, labels)
                return
            except (httpx.HTTPStatusError, httpx.TransportError) as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if pause is None or (status is not None and status not in _RETRY_STATUS):
                    raise
            time.sleep(pause)


def mark_crashed(run_id: Any, message: str) -> bool:
    """Set a flow run that is not final, and its unfinished task runs, to Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import TaskRunSort
    from prefect.states import Crashed

    unfinished = [StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return False
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
            task_run_filter=TaskRunFilter(
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished))
            ),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )
        for task_run in tasks:
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return True


def why_dead(run: Any, stuck_after: timedelta | None = None) -> str | None:
    """Why a RUNNING plate run is dead, or None if it may still be running.

    Proof, in order: its process is gone (same host); its output lease's heartbeat timed out or
    the lease was taken over by another run; or (with `stuck_after`) it has been Running longer
    than that with no lease to tell.
    """
    labels = dict(getattr(run, "labels", None) or {})
    host, pid = labels.get(HOST), labels.get(PID)
    if host == socket.gethostname() and pid and str(pid).isdigit():
        started = labels.get(PID_STARTED) or None
        if not leases.process_alive(int(pid), started):
            return f"its process (pid {pid} on {host}) is gone"
    url = labels.get(LEASE)
    if url:
        try:
            held = leases.read_lease(str(url))
        except Exception:  # noqa: BLE001 - unreachable from here (remote store, credentials)
            held = None
        if held is not None and held.run_id == str(run.id):
            if reason := held.stale_reason():
                return reason
            return None
        if held is not None:
            return f"its output lease is held by another run ({held.run_name}, {held.run_id})"
    start = getattr(run, "start_time", None)
    if stuck_after is not None and start is not None:
        age = datetime.now(UTC) - start
        if age > stuck_after:
            return f"it has been Running for {age} (longer than --stuck-after {stuck_after})"
    return None


def replay_parameters(run: Any) -> dict[str, Any]:
    """The run's parameters, with the absolute paths recorded when it ran."""
    params = dict(run.parameters or {})
    raw = (dict(getattr(run, "labels", None) or {})).get(PARAMS)
    if raw:
        with contextlib.suppress(ValueError):
            params.update(json.loads(raw))
    return params
