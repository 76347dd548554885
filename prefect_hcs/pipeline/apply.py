"""Apply one step plan to one well's pixels: pure array logic, no I/O, no Prefect.

A well's data is a 6-D array ``(timepoint, channel, z, site, y, x)`` plus the labels of each
component axis. For a step with variable components ``vc``, every combination of the *other*
components yields one stack whose leading axes are ``vc`` (in order), which the function pattern
transforms. Each leading axis keeps its length or collapses to 1 (projection, stitching).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from prefect_hcs.pipeline.plan import InputPlane, StepPlan

AXES: tuple[str, ...] = ("timepoint", "channel", "z", "site")


class StepExecutionError(RuntimeError):
    """A function failed or returned something the plan cannot use. Names well, step, group."""


@dataclass
class WellData:
    """Pixels of one well and the label (1-based number) of each index on each component axis."""

    array: np.ndarray
    coords: dict[str, tuple[int, ...]]

    def __post_init__(self) -> None:
        if self.array.ndim != 6:
            raise ValueError(f"well data must be 6-D (t, c, z, site, y, x), got {self.array.shape}")


def assemble_planes(planes: Iterable[tuple[InputPlane, np.ndarray]]) -> WellData:
    """Stack source planes into a WellData (every combination must be present)."""
    items = list(planes)
    if not items:
        raise ValueError("no planes to assemble")
    labels = {
        "timepoint": sorted({p.timepoint for p, _ in items}),
        "channel": sorted({p.channel for p, _ in items}),
        "z": sorted({p.z for p, _ in items}),
        "site": sorted({p.site for p, _ in items}),
    }
    first = items[0][1]
    shape = tuple(len(labels[a]) for a in AXES) + first.shape
    out = np.zeros(shape, dtype=first.dtype)
    index = {a: {v: i for i, v in enumerate(labels[a])} for a in AXES}
    for plane, pixels in items:
        if pixels.shape != first.shape:
            raise ValueError(
                f"plane {plane.url} has shape {pixels.shape}, others {first.shape}: the plate "
                "mixes image sizes"
            )
        out[
            index["timepoint"][plane.timepoint],
            index["channel"][plane.channel],
            index["z"][plane.z],
            index["site"][plane.site],
        ] = pixels
    return WellData(out, {a: tuple(labels[a]) for a in AXES})


def _metadata_kwargs(spec: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in spec.metadata_inputs:
        value = metadata.get(name)
        if name == "grid" and value is not None:
            value = tuple(value)
        if name == "channel_names" and value is not None:
            value = {int(k): v for k, v in value.items()}
        out[name] = value
    return out


def _run_chain(
    chain: Any, stack: np.ndarray, plan: StepPlan, group: str
) -> tuple[np.ndarray, dict]:
    from prefect_hcs.processing.registry import get_function

    tables: dict[str, list[dict[str, Any]]] = {}
    for call in chain:
        spec = get_function(call.name)
        kwargs = {**call.kwargs, **_metadata_kwargs(spec, plan.metadata)}
        try:
            result = spec.func(stack, **kwargs)
        except Exception as exc:
            raise StepExecutionError(
                f"well {plan.well}, step {plan.step_index} {plan.step_name!r}, {group}: "
                f"{call.name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(result, tuple):
            result, extra = result
            for name, rows in (extra or {}).items():
                if isinstance(rows, np.ndarray):  # a label image: one row carrying the array
                    tables.setdefault(name, []).append({"array": rows})
                    continue
                tables.setdefault(name, []).extend(dict(r) for r in rows)
        if not isinstance(result, np.ndarray) or result.ndim != stack.ndim:
            raise StepExecutionError(
                f"well {plan.well}, step {plan.step_name!r}: {call.name} returned "
                f"{getattr(result, 'shape', type(result).__name__)} for an input of shape "
                f"{stack.shape}; it must keep the number of dimensions"
            )
        stack = result
    return stack, tables


def apply_step(data: WellData, plan: StepPlan) -> tuple[WellData, dict[str, list[dict[str, Any]]]]:
    """Run the plan's function pattern over every group of the well. Returns data and tables."""
    if not plan.applies:
        return data, {}
    vc = list(plan.variable_components)
    vc_axes = [AXES.index(c) for c in vc]
    other = [a for a in AXES if a not in vc]
    other_axes = [AXES.index(c) for c in other]
    arr = np.moveaxis(data.array, vc_axes + other_axes, list(range(4)))
    other_shape = arr.shape[len(vc) : 4]
    function = plan.function
    results: dict[tuple[int, ...], np.ndarray] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    for idx in itertools.product(*(range(n) for n in other_shape)):
        labels = {c: data.coords[c][i] for c, i in zip(other, idx, strict=True)}
        group = ", ".join(f"{c} {v}" for c, v in labels.items()) or "all"
        stack = arr[(slice(None),) * len(vc) + idx]
        if isinstance(function, dict):
            key = str(labels.get(plan.group_by or "", ""))
            if key not in function:
                results[idx] = stack
                continue
            chain = function[key]
        else:
            chain = function
        out, extra = _run_chain(chain, stack, plan, group)
        results[idx] = out
        for name, rows in extra.items():
            for row in rows:
                row = {"well": plan.well, **labels, **row}
                plane = row.pop("plane", None)
                if plane is not None and len(vc) == 1 and vc[0] not in row:
                    lab = data.coords[vc[0]]
                    row[vc[0]] = lab[plane] if plane < len(lab) else plane + 1
                tables.setdefault(name, []).append(row)
    shapes = {r.shape for r in results.values()}
    if len(shapes) != 1:
        raise StepExecutionError(
            f"well {plan.well}, step {plan.step_name!r}: groups returned different shapes "
            f"{sorted(shapes)}; every group must return the same shape"
        )
    out_shape = next(iter(shapes))
    for i, c in enumerate(vc):
        if out_shape[i] not in (1, arr.shape[i]):
            raise StepExecutionError(
                f"well {plan.well}, step {plan.step_name!r}: the {c!r} axis went from "
                f"{arr.shape[i]} to {out_shape[i]}; a step may keep an axis or reduce it to 1"
            )
    stacked = np.empty(
        out_shape[: len(vc)] + other_shape + out_shape[len(vc) :],
        dtype=next(iter(results.values())).dtype,
    )
    for idx, r in results.items():
        stacked[(slice(None),) * len(vc) + idx] = r
    array = np.moveaxis(stacked, list(range(4)), vc_axes + other_axes)
    coords = dict(data.coords)
    for i, c in enumerate(vc):
        if out_shape[i] == 1 and arr.shape[i] != 1:
            coords[c] = (data.coords[c][0],)
    return WellData(np.ascontiguousarray(array), coords), tables
