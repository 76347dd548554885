"""Which images a pipeline reads: the plate's z-stack or the instrument's projections.

`vfs_config.plane_source` chooses (pipeline-wide, resolved with provenance like every setting).
Reading projections swaps `layout.projections` in for `layout.images` (as single planes, z = 1)
before anything else is planned, so the rest of the compiler (and its warnings about absent and
padded planes, `pipeline.physical`) never needs to know which was chosen.
"""

from __future__ import annotations

from typing import Any

from prefect_hcs.formats.completeness import plane_completeness
from prefect_hcs.formats.layout import PlateError, PlateLayout

FIELD = "vfs_config.plane_source"


def _value(resolved: Any) -> str:
    value = resolved.value(FIELD)
    return str(getattr(value, "value", value))


def _projection_layout(layout: PlateLayout) -> PlateLayout:
    """The layout with the projections as its (single-plane) images."""
    refs = tuple(r.model_copy(update={"z": 1}) for r in layout.projections)
    fields = {(r.well, r.site) for r in layout.images} or None
    channels = tuple(sorted({r.channel for r in refs}))
    timepoints = tuple(sorted({r.timepoint for r in refs}))
    absent = plane_completeness(layout.url, refs, fields=fields)
    return layout.model_copy(
        update={
            "images": refs,
            "projections": (),
            "channels": channels,
            "z_planes": (1,),
            "timepoints": timepoints,
            "channel_names": {c: n for c, n in layout.channel_names.items() if c in channels},
            "absent": absent,
            "padded": tuple(p for p in layout.padded if p in {r.path for r in refs}),
            "z_spacing_um": None,
        }
    )


def select_planes(
    layout: PlateLayout, base: Any, per_step: list[Any]
) -> tuple[PlateLayout, list[str], list[str]]:
    """(layout to plan, warnings, errors) for the resolved `vfs_config.plane_source`."""
    choice = _value(base)
    where = f"{FIELD} = {choice!r} ({base.source(FIELD).describe()})"
    errors = [
        f"step {i}: {FIELD} = {_value(r)!r} differs from the pipeline's {choice!r}; the plane "
        "source is chosen for the whole pipeline (set it in the pipeline or global config)"
        for i, r in enumerate(per_step)
        if _value(r) != choice
    ]
    if choice == "projections":
        if not layout.projections:
            return (
                layout,
                [],
                [
                    *errors,
                    f"{where} but {layout.url} has no instrument projections "
                    f"({layout.variant or layout.format}); use 'stack'",
                ],
            )
        try:
            layout = _projection_layout(layout)
        except PlateError as exc:
            return layout, [], [*errors, f"{where}: {exc}"]
    return layout, [], errors
