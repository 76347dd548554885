"""vfs_config.plane_source: the compiler reads the stack or the instrument projections."""

from __future__ import annotations

import pytest
from helpers import make_layout

import prefect_hcs.processing  # noqa: F401 - registers functions
from prefect_hcs.config import load_layer
from prefect_hcs.formats.layout import PlaneKey
from prefect_hcs.pipeline.compiler import CompileError, compile_plate
from prefect_hcs.pipeline.model import load_pipeline

DEMO = load_pipeline("demo")
PROJECTIONS = load_layer({"vfs_config": {"plane_source": "projections"}}, layer="pipeline")


def _with_projections(channels=(1, 2)):
    layout = make_layout(2)
    projections = tuple(
        r.model_copy(update={"path": r.path.replace("ZStep_1", "ZStep_0"), "projection": "maximum"})
        for r in layout.images
        if r.z == 1 and r.channel in channels
    )
    return layout.model_copy(update={"projections": projections})


def test_projections_replace_the_stack_in_every_plan():
    plan = compile_plate(_with_projections(), DEMO, pipeline_layer=PROJECTIONS)
    first = plan.plans_for(plan.wells[0])[0]
    assert {p.z for p in first.source_planes} == {1}
    assert all("/ZStep_0/" in p.url for p in first.source_planes)
    assert len(first.source_planes) == 4 * 2  # sites x channels
    assert plan.layout["projections"]["count"] == 2 * 4 * 2


def test_stack_is_the_default_and_reads_every_plane():
    plan = compile_plate(_with_projections(), DEMO)
    first = plan.plans_for(plan.wells[0])[0]
    assert len(first.source_planes) == 4 * 2 * 3
    assert not any("/ZStep_0/" in p.url for p in first.source_planes)


def test_projections_requested_without_projections_is_an_error_naming_the_layer():
    with pytest.raises(
        CompileError,
        match=r"plane_source = 'projections' \(pipeline layer.*no instrument projections",
    ):
        compile_plate(make_layout(2), DEMO, pipeline_layer=PROJECTIONS)


def test_a_step_choosing_another_plane_source_is_an_error():
    pipe = load_pipeline(
        {
            "name": "t",
            "steps": [
                {"func": "max_projection", "variable_components": ["z"],
                 "config": {"vfs_config": {"plane_source": "projections"}}},
            ],
        }
    )  # fmt: skip
    with pytest.raises(
        CompileError, match="step 0: vfs_config.plane_source = 'projections' differs"
    ):
        compile_plate(_with_projections(), pipe)


def test_reading_absent_planes_is_a_compile_warning():
    layout = make_layout(2)
    kept = tuple(r for r in layout.images if not (r.channel == 2 and r.z > 1))
    absent = tuple(
        PlaneKey(well=w, site=s, channel=2, z=z, timepoint=1)
        for w in layout.wells for s in layout.sites for z in (2, 3)
    )  # fmt: skip
    plan = compile_plate(layout.model_copy(update={"images": kept, "absent": absent}), DEMO)
    [warning] = [w for w in plan.warnings if "not acquired" in w]
    assert "16 plane(s)" in warning and "(c2, z2, t1), (c2, z3, t1)" in warning
    assert plan.layout["absent"] == {"count": 16, "channel_z_t": [[2, 2, 1], [2, 3, 1]]}
