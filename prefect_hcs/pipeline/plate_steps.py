"""Plate-level steps: results computed once from many wells and used by per-well steps.

A function that declares the metadata input ``illumination`` (`illumination_correct`) needs a
flat-field per channel estimated from the whole plate. The compiler calls `plan_plate_steps`
after the per-well plans exist: it plans one `PlateStepPlan` per distinct estimate (which wells'
source planes, which parameters, where the result goes), fingerprints it, and gives every
step plan that uses it ``metadata["illumination"] = {"url", "fingerprint"}`` — so the per-well
fingerprints (and the resume chain) include the plate-level step's. The runtime runs the plate
step before the wells (`runtime.plate_steps`) and reuses a stored result only when it carries
the same fingerprint and the same source-file stamps.
"""

from __future__ import annotations

from typing import Any

from prefect_hcs.pipeline.plan import Frozen, InputPlane, StepPlan, fingerprint_of

__all__ = ["PLATE_INPUTS", "PlateStepPlan", "plan_plate_steps"]

#: Metadata inputs that are plate-level results, and the estimate's kwargs (with defaults).
PLATE_INPUTS: dict[str, dict[str, Any]] = {
    "illumination": {"dark_offset": 0.0, "smooth": 0.06, "sample_wells": None},
}


class PlateStepPlan(Frozen):
    """One plate-level computation: its kind, parameters, input planes and result URL."""

    kind: str
    kwargs: dict[str, Any]
    wells: tuple[str, ...]
    channels: tuple[int, ...]
    source_planes: tuple[InputPlane, ...]
    result_url: str
    fingerprint: str = ""


def _calls(function: Any) -> list[Any]:
    chains = function.values() if isinstance(function, dict) else [function]
    return [call for chain in chains for call in chain]


def _sample(wells: list[str], n: int | None) -> list[str]:
    """``n`` wells spread evenly over the plate (all when None or n >= len)."""
    if n is None or n >= len(wells):
        return wells
    step = len(wells) / n
    return [wells[int(i * step)] for i in range(n)]


def plan_plate_steps(
    plans: list[StepPlan], root: str
) -> tuple[list[StepPlan], tuple[PlateStepPlan, ...]]:
    """Plan the plate-level steps the step plans need; return the updated plans and them.

    ``root`` is the run's output root; results go to ``<root>/.plate/<kind>-<fp16>.npz``.
    """
    from prefect_hcs.processing.registry import get_function

    wanted: dict[str, PlateStepPlan] = {}
    uses: dict[int, dict[str, str]] = {}
    first_step = {p.well: p for p in plans if p.step_index == 0}
    wells = sorted(first_step)
    for idx, plan in enumerate(plans):
        for call in _calls(plan.function):
            for kind in get_function(call.name).metadata_inputs:
                if kind not in PLATE_INPUTS:
                    continue
                kwargs = {k: call.kwargs.get(k, d) for k, d in PLATE_INPUTS[kind].items()}
                sample = _sample(wells, kwargs["sample_wells"])
                planes = tuple(q for w in sample for q in first_step[w].source_planes)
                content = {"kind": kind, "kwargs": kwargs, "planes": [q.url for q in planes]}
                fp = fingerprint_of(content)
                if fp not in wanted:
                    wanted[fp] = PlateStepPlan(
                        kind=kind,
                        kwargs=kwargs,
                        wells=tuple(sample),
                        channels=tuple(sorted({q.channel for q in planes})),
                        source_planes=planes,
                        result_url=f"{root.rstrip('/')}/.plate/{kind}-{fp[:16]}.npz",
                        fingerprint=fp,
                    )
                uses.setdefault(idx, {})[kind] = fp
    if not uses:
        return plans, ()
    out: list[StepPlan] = []
    chain_by_well: dict[str, str] = {}
    for idx, plan in enumerate(plans):
        if idx in uses:
            extra = {
                k: {"url": wanted[fp].result_url, "fingerprint": fp} for k, fp in uses[idx].items()
            }
            plan = plan.model_copy(update={"metadata": {**plan.metadata, **extra}})
            plan = plan.with_fingerprint()
        prev = chain_by_well.get(plan.well, "") if plan.step_index else ""
        chain = fingerprint_of([prev, plan.fingerprint])
        chain_by_well[plan.well] = chain
        out.append(plan.model_copy(update={"chain_fingerprint": chain}))
    return out, tuple(wanted.values())
