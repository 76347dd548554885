"""Execute a well's step plans in order, pixels handed from step to step in memory.

What the `run-steps` task calls for each well of its chunk; no Prefect imports here. Inputs come
from the source plate (`well_inputs`), outputs go where the plans say (`well_outputs`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from prefect_hcs.pipeline.apply import WellData, apply_step
from prefect_hcs.pipeline.plan import OutputPlan, StepPlan
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime.plate_steps import resolve_plate_inputs
from prefect_hcs.runtime.results import WellStepRun
from prefect_hcs.runtime.well_inputs import load_input, save_intermediate
from prefect_hcs.runtime.well_outputs import write_step_outputs, write_well_outputs


class StepFailedError(RuntimeError):
    """A step of a well chain failed; `step` names it, the cause is the original error."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"step {step!r}: {type(error).__name__}: {error}")
        self.step = step
        self.error = error


#: Wells whose whole chain finished in this process, by (task run, last plan's fingerprint): a task
#: retry re-runs its chunk and answers these from here instead of recomputing them. Keyed by the
#: task run so that another run of the same plan (a resume, a changed output setting) recomputes.
_DONE_CHAINS: dict[tuple[str, str], list[WellStepRun]] = {}


def run_well_chain(
    plans: list[StepPlan],
    output: OutputPlan,
    storage_options: dict[str, Any] | None = None,
    before_step: Callable[[], None] | None = None,
    attempt_key: str | None = None,
    where: dict[str, Any] | None = None,
) -> list[WellStepRun]:
    """Execute consecutive steps of one well, passing pixels from step to step in memory.

    Args:
        plans: one well's step plans, in order. A step reading exactly what the previous one
            wrote gets the array itself (no `.npz` encode, copy or decode; the intermediate is
            not written, since nothing else reads it); other inputs are loaded from storage.
        output: the plate's output plan; every output uses its storage options.
        storage_options: the source plate's fsspec options.
        before_step: called before each step (the flow's output-lease check).
        attempt_key: the task run's id: a well this process already finished under the same
            key is answered without recomputing it (a retry of the same task run).
        where: where the steps run (`clusters.where()`), copied into each result.

    Raises:
        StepFailedError: the first step that failed; its cause is the original error.
    """
    key = (attempt_key or "", plans[-1].fingerprint)
    if attempt_key and key in _DONE_CHAINS:
        return _DONE_CHAINS[key]
    opts = dict(storage_options or {})
    out = dict(output.storage_options)
    results: list[WellStepRun] = []
    carried: tuple[WellData, str] | None = None
    for i, plan in enumerate(plans):
        nxt = plans[i + 1] if i + 1 < len(plans) else None
        hand_off = nxt is not None and nxt.read_from == plan.output_url
        try:
            if before_step is not None:
                before_step()
            carried, seconds, counts = _run_step(plan, carried, hand_off, output, opts, out)
        except Exception as exc:
            raise StepFailedError(plan.step_name, exc) from exc
        results.append(
            WellStepRun(
                well=plan.well,
                step=plan.step_name,
                seconds=seconds,
                tables=counts,
                pid=os.getpid(),
                where=dict(where or {}),
            )  # fmt: skip
        )
    if attempt_key:
        if len(_DONE_CHAINS) >= 100_000:  # a long-lived served process: forget the oldest
            _DONE_CHAINS.pop(next(iter(_DONE_CHAINS)), None)
        _DONE_CHAINS[key] = results
    return results


def _run_step(
    plan: StepPlan,
    carried: tuple[WellData, str] | None,
    hand_off: bool,
    output: OutputPlan,
    opts: dict[str, Any],
    out: dict[str, Any],
) -> tuple[tuple[WellData, str] | None, float, dict[str, int]]:
    """One step of a well: (what the next step gets in memory or None, seconds, table rows)."""
    start = time.perf_counter()
    data, inputs_fp = carried if carried is not None else load_input(plan, opts, out)
    carried = None
    result, tables = apply_step(data, resolve_plate_inputs(plan, out))
    del data  # the input is no longer needed: release it before the outputs are written
    if plan.is_last:
        counts = write_well_outputs(plan, result, tables, output, inputs_fp, out)
    else:
        with hio.write_errors(plan.output_url):
            counts = write_step_outputs(plan, result, tables, output, out)
            if not hand_off:
                save_intermediate(result, inputs_fp, plan.output_url, out)
    seconds = time.perf_counter() - start
    return ((result, inputs_fp) if hand_off else None), seconds, counts
