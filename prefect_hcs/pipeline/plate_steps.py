"""Plate-level steps: results computed once from many wells and used by per-well steps.

A function that declares the metadata input ``illumination`` (`illumination_correct`) needs a
flat-field per channel estimated from the whole plate. The compiler calls `plan_plate_steps`
on the per-well drafts, before fingerprinting them: it plans one `PlateStepPlan` per distinct estimate (which wells'
source planes, which parameters, where the result goes), fingerprints it, and gives every
step plan that uses it ``metadata["illumination"] = {"url", "fingerprint"}`` — so the per-well
fingerprints (and the resume chain) include the plate-level step's. The runtime runs the plate
step before the wells (`runtime.plate_steps`) and reuses a stored result only when it carries
the same fingerprint and the same source-file stamps.
"""

from __future__ import annotations

from typing import Any

from prefect_hcs.pipeline.plan import Frozen, InputPlane, fingerprint_of

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
    functions: list[Any], drafts: list[dict[str, Any]], root: str
) -> tuple[list[dict[str, Any]], tuple[PlateStepPlan, ...]]:
    """Plan the plate-level steps the step-plan drafts need; return the updated drafts and them.

    `functions` is each step's ``func``; `drafts` are the per-well `StepPlan` fields (with
    ``step_index``) before fingerprinting (the compiler's phase 5). A draft whose functions need a
    plate-level result gets ``metadata[kind] = {"url", "fingerprint"}``, so its fingerprint
    (phase 7) covers the plate step's. ``root`` is the run's output root; results go to
    ``<root>/.plate/<kind>-<fp16>.npz``.
    """
    from prefect_hcs.processing.registry import get_function

    needs = [  # per step: (kind, call) of each plate-level input its functions need
        [
            (kind, call)
            for call in _calls(function)
            for kind in get_function(call.name).metadata_inputs
            if kind in PLATE_INPUTS
        ]
        for function in functions
    ]
    if not any(needs):
        return drafts, ()
    wanted: dict[str, PlateStepPlan] = {}
    first_step = {d["well"]: d for d in drafts if d["step_index"] == 0}
    wells = sorted(first_step)
    out = []
    for d in drafts:
        extra = {}
        for kind, call in needs[d["step_index"]]:
            kwargs = {k: call.kwargs.get(k, v) for k, v in PLATE_INPUTS[kind].items()}
            sample = _sample(wells, kwargs["sample_wells"])
            planes = tuple(q for w in sample for q in first_step[w]["source_planes"])
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
            extra[kind] = {"url": wanted[fp].result_url, "fingerprint": fp}
        out.append({**d, "metadata": {**d["metadata"], **extra}} if extra else d)
    return out, tuple(wanted.values())
