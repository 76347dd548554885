"""The flow's side of output ownership: take the lease, keep it, give it back, check it.

`take_output_lease` runs in the flow process right after compilation, before anything is written:
it takes the lease on the plan's output root (refusing a second live run, taking over the lease
of a dead one and marking that run Crashed), labels the flow run (see `dead_runs`) and starts the
heartbeat. `assert_lease_held` is what every writing task calls first, in whatever process it runs.
OMERO outputs have no atomic create and are not leased (docs/bad-input.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from prefect_hcs.pipeline.plan import OutputPlan, PlatePlan
from prefect_hcs.runtime import dead_runs
from prefect_hcs.runtime.lease import LeaseInfo, LeaseLostError, OutputLease, check_owner

_HELD: dict[str, OutputLease] = {}  # flow run id -> its lease, in the flow process


def _current_run() -> tuple[str | None, str]:
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return (str(run_id) if run_id else None), str(flow_run.name or "")


def record_parameters(params: dict[str, Any]) -> None:
    """Label the current flow run with where it runs and its absolute parameters (best effort)."""
    run_id, _ = _current_run()
    if run_id is None:
        return
    with contextlib.suppress(Exception):  # labels help finding dead runs; never fail a run
        dead_runs.record_run(run_id, params)


def take_output_lease(plan: PlatePlan, params: dict[str, Any], logger: Any = None) -> None:
    """Own the plan's output for this flow run, or raise LeaseHeldError naming the owner."""
    run_id, run_name = _current_run()
    if run_id is None or plan.output.root_backend != "disk":
        return
    lease = OutputLease(
        plan.output.root, LeaseInfo.for_this_process(run_id, run_name), plan.output.storage_options
    )
    takeover = lease.acquire()
    _HELD[run_id] = lease
    lease.start_heartbeat()
    with contextlib.suppress(Exception):
        dead_runs.record_run(run_id, params, lease.url)
    if takeover is None:
        return
    old = takeover.previous
    note = (
        f"the output {plan.output.root} was still leased by this run, but {takeover.reason}; "
        f"flow run {run_name!r} ({run_id}) took it over"
    )
    log = logger or logging.getLogger(__name__)
    log.warning(
        "took over the output lease of dead flow run %r (%s): %s", old.run_name, old.run_id,
        takeover.reason,
    )  # fmt: skip
    try:
        dead_runs.mark_crashed(old.run_id, note)
    except Exception as exc:  # noqa: BLE001 - the old run may be on another server, or deleted
        log.warning("could not mark flow run %s Crashed: %s", old.run_id, exc)


def release_output_lease() -> None:
    """Give the current flow run's lease back (if it still holds it)."""
    run_id, _ = _current_run()
    lease = _HELD.pop(run_id or "", None)
    if lease is not None:
        lease.release()


def assert_lease_held(output: OutputPlan) -> None:
    """Raise LeaseLostError unless the current flow run owns `output` (writers call this first)."""
    run_id, _ = _current_run()
    if run_id is None or output.root_backend != "disk":
        return
    held = _HELD.get(run_id)
    if held is not None and held.lost:
        raise LeaseLostError(held.lost)
    check_owner(output.root, run_id, output.storage_options)


def worker_lease_check(output: OutputPlan) -> Callable[[], None] | None:
    """`assert_lease_held` for a worker process: a picklable check of the lease file.

    Raises LeaseLostError now if the flow already knows the lease is lost; the check returned
    reads the lease file (the flow's heartbeat state stays in the flow process). None: no lease.
    """
    run_id, _ = _current_run()
    if run_id is None or output.root_backend != "disk":
        return None
    held = _HELD.get(run_id)
    if held is not None and held.lost:
        raise LeaseLostError(held.lost)
    return functools.partial(check_owner, output.root, run_id, output.storage_options)
