"""Built-in pipelines, available by name (e.g. as a deployment parameter `pipeline: demo`).

A built-in pipeline must plan on any valid plate, so `fit_to_plate` adapts it to the plate it
runs on (with a plan warning for each change): no stitching where there is one site, where the
plate records neither stage positions nor a site grid, or where the fields do not overlap; the
nuclei count on the first channel when the plate has no channel 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.formats.physical import stage_positions
from prefect_hcs.pipeline.model import Pipeline, Step
from prefect_hcs.pipeline.physical import site_positions_px, stitch_metadata_problem


def demo_pipeline() -> Pipeline:
    """Project z, remove background, normalize, stitch the sites, count nuclei in channel 1."""
    return Pipeline(
        name="demo",
        description="Max-project z, top-hat background, normalize, stitch, count nuclei (ch 1).",
        steps=(
            Step(name="project", func="max_projection", variable_components=("z",)),
            Step(
                name="background",
                func={"name": "tophat_background", "kwargs": {"radius": 15}},
                variable_components=("site",),
            ),
            Step(
                name="normalize",
                func={"name": "percentile_normalize", "kwargs": {"low": 0.5, "high": 99.8}},
                variable_components=("site",),
            ),
            Step(name="stitch", func="stitch_tiles", variable_components=("channel", "site")),
            Step(
                name="count",
                func={"1": {"name": "count_nuclei", "kwargs": {"min_area": 20}}},
                group_by="channel",
                variable_components=("site",),
            ),
        ),
    )


BUILTIN_PIPELINES: dict[str, Callable[[], Pipeline]] = {"demo": demo_pipeline}


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
    if pipeline != demo_pipeline():
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
