"""Built-in pipelines, available by name (e.g. as a deployment parameter `pipeline: demo`)."""

from __future__ import annotations

from collections.abc import Callable

from prefect_hcs.pipeline.model import Pipeline, Step


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
