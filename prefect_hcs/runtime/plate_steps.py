"""Run the plan's plate-level steps before the wells, and hand their results to the wells.

`run_plate_steps` computes each `PlateStepPlan` (today: the flat-field of every channel for
`illumination_correct`) from its wells' source planes and stores it as an ``.npz`` under the
output root, with the plan's fingerprint and the stamps (size, modification time) of the files
it read. A stored result is reused only when both match — a retried or resumed plate does not
re-read the plate, a replaced source file recomputes it. `resolve_plate_inputs` loads the result
into a step plan's metadata for the worker (checking it is the one the plan was compiled for).
No Prefect here (worker processes import this); the task is `tasks.plate_steps_task`.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from prefect_hcs.pipeline.plan import PlatePlan, StepPlan, fingerprint_of
from prefect_hcs.pipeline.plate_steps import PlateStepPlan
from prefect_hcs.runtime import io as hio

__all__ = ["resolve_plate_inputs", "run_plate_steps", "stale_plate_results"]

_LOADED: dict[str, dict[str, Any]] = {}


def _stamps(step: PlateStepPlan, opts: dict[str, Any]) -> str:
    stamps = []
    for p in step.source_planes:
        fs, path = hio.fs_for(p.url, opts)
        info = fs.info(path)
        stamp = next(
            (info[k] for k in ("ETag", "etag", "mtime", "LastModified") if k in info), None
        )
        stamps.append([p.url, info.get("size"), str(stamp)])
    return fingerprint_of(stamps)


def _stored(url: str, opts: dict[str, Any]) -> dict[str, Any] | None:
    if not hio.exists(url, opts):
        return None
    with np.load(io.BytesIO(hio.read_bytes(url, opts)), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _compute(step: PlateStepPlan, opts: dict[str, Any]) -> dict[str, np.ndarray]:
    from prefect_hcs.processing.illumination import estimate_flatfield

    if step.kind != "illumination":
        raise ValueError(f"unknown plate-level step {step.kind!r}")
    flats = []
    for channel in step.channels:
        planes = (
            hio.read_source_plane(p.url, opts) for p in step.source_planes if p.channel == channel
        )
        flats.append(
            estimate_flatfield(
                planes, float(step.kwargs["dark_offset"]), float(step.kwargs["smooth"])
            )
        )
    return {"flatfield": np.stack(flats), "channels": np.asarray(step.channels, dtype=np.int64)}


def run_plate_steps(plan: PlatePlan, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Compute (or reuse) every plate-level result of ``plan``; return what was done per step."""
    opts = dict(storage_options or {})
    out = dict(getattr(plan.output, "storage_options", {}) or {})
    done = []
    for raw in plan.plate_steps:
        step = PlateStepPlan.model_validate(raw)
        stamps = _stamps(step, opts)
        old = _stored(step.result_url, out)
        if (
            old is not None
            and str(old.get("fingerprint")) == step.fingerprint
            and str(old.get("stamps")) == stamps
        ):
            done.append(f"{step.kind}: reused {step.result_url}")
            continue
        result = _compute(step, opts)
        buf = io.BytesIO()
        arrays: dict[str, Any] = {"fingerprint": step.fingerprint, "stamps": stamps, **result}
        np.savez(buf, **arrays)
        hio.write_bytes(step.result_url, buf.getvalue(), out)
        _LOADED.pop(step.result_url, None)
        done.append(
            f"{step.kind}: estimated from {len(step.source_planes)} planes of "
            f"{len(step.wells)} wells → {step.result_url}"
        )
    return done


def stale_plate_results(plan: PlatePlan, storage_options: dict[str, Any] | None = None) -> set[str]:
    """URLs of plate-level results that this run will (re)compute.

    A result is stale when it is missing, belongs to another plan, or was computed from source
    files that have changed since (a replaced plane in *any* sampled well). A well completed with
    a stale result must be recomputed too, even if its own files did not change: resume uses this
    to keep every well consistent with the plate-level result it was corrected with.
    """
    opts = dict(storage_options or {})
    out = dict(getattr(plan.output, "storage_options", {}) or {})
    stale = set()
    for raw in plan.plate_steps:
        step = PlateStepPlan.model_validate(raw)
        try:
            old = _stored(step.result_url, out)
            current = _stamps(step, opts)
        except (OSError, ValueError):
            stale.add(step.result_url)
            continue
        if (
            old is None
            or str(old.get("fingerprint")) != step.fingerprint
            or str(old.get("stamps")) != current
        ):
            stale.add(step.result_url)
    return stale


def resolve_plate_inputs(plan: StepPlan, storage_options: dict[str, Any] | None = None) -> StepPlan:
    """``plan`` with each plate-level metadata input replaced by its loaded result."""
    refs = {k: v for k, v in plan.metadata.items() if isinstance(v, dict) and "fingerprint" in v}
    if not refs or not plan.applies:
        return plan
    opts = dict(storage_options or {})
    metadata = dict(plan.metadata)
    for kind, ref in refs.items():
        if ref["url"] not in _LOADED:
            stored = _stored(ref["url"], opts)
            if stored is None or str(stored["fingerprint"]) != ref["fingerprint"]:
                raise RuntimeError(
                    f"well {plan.well}, step {plan.step_name!r}: the plate-level {kind} result "
                    f"{ref['url']} is missing or belongs to another plan; run the whole plate"
                )
            _LOADED[ref["url"]] = stored
        metadata[kind] = _LOADED[ref["url"]]
    return plan.model_copy(update={"metadata": metadata})
