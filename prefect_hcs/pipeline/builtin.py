"""Built-in pipelines, fitted to the plate they run on.

The pipelines themselves are data: YAML documents in `pipelines/`, loaded by name through
`model.load_pipeline` (e.g. as a deployment parameter `pipeline: demo`).

A built-in pipeline must plan on any valid plate, so `fit_to_plate` adapts it to the plate it
runs on (with a plan warning for each change): no stitching where there is one site, where the
plate records neither stage positions nor a site grid, or where the fields do not overlap; the
nuclei count on the first channel when the plate has no channel 1.
"""

from __future__ import annotations

import numpy as np

from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.formats.physical import stage_positions
from prefect_hcs.pipeline.model import Pipeline, builtin_pipeline
from prefect_hcs.pipeline.physical import site_positions_px, stitch_metadata_problem


def demo_pipeline() -> Pipeline:
    """Project z, remove background, normalize, stitch the sites, count nuclei in channel 1."""
    return builtin_pipeline("demo")


def demo_objects_pipeline() -> Pipeline:
    """The demo, then `measure_objects`: a per-object table and NGFF nucleus labels per field."""
    return builtin_pipeline("demo-objects")


def _stitch_skip_reason(layout: PlateLayout) -> str | None:
    """Why the demo's stitching step cannot run on this plate, or None if it can."""
    if len(layout.sites) == 1:
        return "the plate has one site per well"
    if stitch_metadata_problem(layout, "stitch_tiles", len(layout.sites)):
        return "the plate records neither stage positions (with a pixel size) nor a site grid"
    from prefect_hcs.processing.stitching import fields_overlap

    stage = stage_positions(layout)
    for well in layout.wells:
        nominal = site_positions_px(layout, well, stage)
        if nominal is not None and not fields_overlap(np.asarray(nominal), layout.image_shape):
            return f"the fields of well {well} do not overlap (each is written at its position)"
    return None


def fit_to_plate(pipeline: Pipeline, layout: PlateLayout) -> tuple[Pipeline, list[str]]:
    """Adapt the built-in demo pipeline to a plate; returns it and what was changed (warnings).

    Any other pipeline is returned unchanged: a user's pipeline says what it means.
    """
    if pipeline not in (demo_pipeline(), demo_objects_pipeline()):
        return pipeline, []
    steps, notes = [], []
    first = str(layout.channels[0]) if layout.channels else "1"
    for step in pipeline.steps:
        if step.name == "stitch" and (reason := _stitch_skip_reason(layout)):
            step = step.model_copy(update={"enabled": False})
            notes.append(f"pipeline demo: step 'stitch' is skipped: {reason}")
        if step.name == "count" and isinstance(step.func, dict) and first not in step.func:
            step = step.model_copy(update={"func": {first: next(iter(step.func.values()))}})
            notes.append(
                f"pipeline demo: step 'count' counts nuclei in channel {first}, the plate's first "
                "channel (it has no channel 1)"
            )
        steps.append(step)
    return pipeline.model_copy(update={"steps": tuple(steps)}), notes
