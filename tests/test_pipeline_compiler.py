"""The compiler: plans, fingerprints, chunking, backends with reasons, and every rejection."""

from __future__ import annotations

import pytest
from helpers import make_layout

import prefect_hcs.processing  # noqa: F401 - registers functions
from prefect_hcs.config import load_layer
from prefect_hcs.pipeline.compiler import CompileError, compile_plate
from prefect_hcs.pipeline.model import PipelineError, load_pipeline
from prefect_hcs.pipeline.wells import select_wells

DEMO = load_pipeline("demo")


def G(data):
    return load_layer(data, layer="global")


def P(data):
    return load_layer(data, layer="pipeline")


def pipe(*steps):
    return load_pipeline({"name": "t", "steps": list(steps)})


def test_demo_plan_shape_and_required_keys():
    plan = compile_plate(make_layout(4), DEMO)
    assert plan.steps == ("project", "background", "normalize", "stitch", "count")
    assert len(plan.step_plans) == 4 * 5
    for p in plan.step_plans:
        s = p.summary()
        for key in (
            "well", "step", "read_backend", "write_backend", "materialized_backend",
            "output_dir", "materialized_output_dir", "fingerprint",
        ):  # fmt: skip
            assert key in s
        assert s["materialized_output_dir"] is None  # nothing materialized by default
        assert len(p.fingerprint) == 64
    first = plan.plan("A01", 0)
    assert first.read_backend == "disk" and first.read_from is None
    assert len(first.source_planes) == 4 * 2 * 3
    second = plan.plan("A01", 1)
    assert second.read_backend == "memory" and second.read_from == first.output_url
    last = plan.plan("A01", 4)
    assert last.write_backend == "zarr" and last.output_dir.endswith("P1.ome.zarr/A/1")
    assert plan.output.fields_per_well == 1  # stitched
    assert plan.output.root == "/data/plates/P1_hcs"
    assert (
        last.special_outputs["measurements"]
        == "/data/plates/P1_hcs/tables/count/A01_measurements.csv"
    )
    assert "vfs_config.materialization_backend" in last.config
    assert last.config["vfs_config.materialization_backend"]["source"]["layer"] == "default"


def test_fingerprints_are_stable_and_sensitive():
    a = compile_plate(make_layout(4), DEMO)
    b = compile_plate(make_layout(4), load_pipeline(DEMO.to_data()))
    assert a.fingerprint == b.fingerprint and a.fingerprints() == b.fingerprints()
    c = compile_plate(
        make_layout(4), DEMO, pipeline_layer=P({"zarr_config": {"compression_level": 5}})
    )
    assert c.fingerprint != a.fingerprint
    # only the last step's plans carry zarr settings, so only they change
    changed = {k for k, v in c.fingerprints().items() if a.fingerprints()[k] != v}
    assert changed == {f"{w}/count" for w in a.wells}


def test_chunking_keeps_a_384_well_plate_within_the_task_budget():
    plan = compile_plate(make_layout(384, sites=4, channels=2, z=1), DEMO)
    assert plan.task_count <= 200
    assert sum(len(c) for c in plan.chunks) == 384
    assert len(plan.chunks) >= 2
    small = compile_plate(
        make_layout(384), DEMO, global_layer=G({"execution_config": {"max_task_runs": 50}})
    )
    assert small.task_count <= 50


def test_materialization_uses_the_static_override_sub_dir_and_step_filter():
    pipeline = pipe(
        {
            "name": "project",
            "func": "max_projection",
            "config": {
                "step_materialization_config": {"enabled": True},
                "step_well_filter_config": {"well_filter": "A01,A02"},
            },
        },  # fmt: skip
        {"name": "norm", "func": "percentile_normalize"},
    )
    plan = compile_plate(make_layout(4), pipeline)
    p = plan.plan("A01", 0)
    assert p.materialized_output_dir == "/data/plates/P1_hcs/checkpoints/project"
    assert p.materialized_url.endswith("checkpoints/project/A01.tif")
    assert plan.plan("A03", 0).materialized_output_dir is None  # sibling-inherited well filter
    assert plan.plan("A03", 0).applies is False


BAD = [
    ("unknown function", pipe({"func": "max_projektion"}), {}, "max_projection"),
    (
        "bad kwarg",
        pipe({"func": {"name": "tophat_background", "kwargs": {"radiuss": 3}}}),
        {},
        "radiuss",
    ),
    (
        "wrong kwarg type",
        pipe({"func": {"name": "tophat_background", "kwargs": {"radius": "big"}}}),
        {},
        "radius",
    ),
    (
        "mapping key not a channel",
        pipe({"func": {"7": "count_nuclei"}, "group_by": "channel"}),
        {},
        "['7']",
    ),
    (
        "disconnected step",
        pipe(
            {"name": "a", "func": "max_projection"},
            {"name": "b", "func": "max_projection", "input_source": "pipeline_start"},
        ),
        {},
        "never used",
    ),
    (
        "read backend the plate cannot take",
        DEMO,
        {"vfs_config": {"read_backend": "omero"}},
        "can only be read with 'disk'",
    ),
    (
        "omero materialization for a disk plate",
        DEMO,
        {"vfs_config": {"materialization_backend": "omero"}},
        "not an OMERO plate",
    ),
    (
        "output equals input",
        DEMO,
        {"path_planning_config": {"output_dir_suffix": ""}},
        "is the input plate",
    ),
    (
        "output inside input",
        DEMO,
        {"path_planning_config": {"global_output_folder": "/data/plates/P1"}},
        "inside it",
    ),
    (
        "empty well selection",
        DEMO,
        {"well_filter_config": {"well_filter": "row:H"}},
        "well selection is empty",
    ),
    (
        "memory intermediates with dask",
        DEMO,
        {
            "vfs_config": {"intermediate_backend": "memory"},
            "execution_config": {"task_runner": "dask"},
        },
        "separate processes",
    ),
    (
        "stitching what is already stitched",
        pipe({"name": "s1", "func": "stitch_tiles"}, {"name": "s2", "func": "stitch_tiles"}),
        {},
        "already stitched",
    ),
    (
        "reducing a component not stacked",
        pipe({"func": "stitch_tiles", "variable_components": ["channel"]}),
        {},
        "must be one of the step's variable_components",
    ),
]


@pytest.mark.parametrize(("case", "pipeline", "layer", "needle"), BAD, ids=[b[0] for b in BAD])
def test_compile_time_rejections(case, pipeline, layer, needle):
    with pytest.raises(CompileError) as info:
        compile_plate(make_layout(4), pipeline, pipeline_layer=P(layer))
    assert needle in str(info.value), str(info.value)


def test_stitching_a_plate_without_grid_is_rejected():
    stitch = pipe({"name": "stitch", "func": "stitch_tiles"})
    with pytest.raises(CompileError, match="needs the fields' stage positions or the site grid"):
        compile_plate(make_layout(2, grid=None), stitch)


def test_secrets_in_storage_options_are_rejected():
    with pytest.raises(CompileError, match="looks like a secret"):
        compile_plate(make_layout(2), DEMO, storage_options={"password": "hunter2"})


def test_all_problems_are_reported_at_once():
    bad = pipe({"func": "nope1"}, {"func": "nope2"})
    with pytest.raises(CompileError) as info:
        compile_plate(make_layout(2), bad)
    assert len(info.value.problems) == 2


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"name": "x", "steps": []}, "at least one step"),
        ({"name": "x", "steps": [{"func": "a"}, {"func": "a"}]}, "unique"),
        ({"name": "x", "steps": [{"func": {"1": "count_nuclei"}}]}, "needs group_by"),
        ({"name": "x", "steps": [{"func": "a", "bogus": 1}]}, "bogus"),
        ({"steps": [{"func": "a"}]}, "name"),
        (
            {
                "name": "x",
                "steps": [{"func": "a", "config": {"vfs_config": {"read_backend": "tape"}}}],
            },
            "tape",
        ),
    ],
)
def test_bad_pipeline_definitions(data, needle):
    with pytest.raises(PipelineError, match=needle):
        load_pipeline(data)


def test_pipeline_from_yaml_text_and_unknown_reference(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("name: y\nsteps:\n  - func: max_projection\n    variable_components: [z]\n")
    assert load_pipeline(str(f)).steps[0].name == "max_projection"
    with pytest.raises(PipelineError, match="unknown pipeline 'nosuch'"):
        load_pipeline("nosuch")


# ---------------------------------------------------------------------------------- OMERO plates
def test_seed_bug_global_omero_pipeline_unset_vfs():
    g = G({"vfs_config": {"materialization_backend": "omero"}})
    p = P({"path_planning_config": {"output_dir_suffix": "_outputs"}, "vfs_config": None,
           "step_materialization_config": {"enabled": True}})  # fmt: skip
    plan = compile_plate(make_layout(2, fmt="omero"), DEMO, global_layer=g, pipeline_layer=p)
    assert {s.materialized_backend for s in plan.step_plans} == {"omero"}
    assert all(s.materialized_output_dir.startswith("omero://plate_7/") for s in plan.step_plans)
    assert plan.output.image_backend == "omero"
    assert not any("/omero/" in (s.materialized_output_dir or "") for s in plan.step_plans)


def test_omero_auto_resolves_to_omero_and_says_why():
    plan = compile_plate(make_layout(2, fmt="omero"), DEMO)
    p = plan.plan("A01", 0)
    assert p.materialized_backend == "omero" and p.read_backend == "omero"
    assert "OMERO plate" in p.backend_reasons["materialized_backend"]


def test_omero_with_local_output_folder_materializes_there(tmp_path):
    p = P({"vfs_config": {"materialization_backend": "disk"},
           "path_planning_config": {"global_output_folder": str(tmp_path)},
           "step_materialization_config": {"enabled": True}})  # fmt: skip
    plan = compile_plate(make_layout(2, fmt="omero"), DEMO, pipeline_layer=p)
    assert {s.materialized_backend for s in plan.step_plans} == {"disk"}
    assert plan.plan("A01", 0).materialized_output_dir.startswith(str(tmp_path))
    assert plan.output.image_backend == "zarr"


@pytest.mark.parametrize(
    ("layer", "needle"),
    [
        ({"vfs_config": {"materialization_backend": "zarr"}}, "does not scale"),
        ({"vfs_config": {"materialization_backend": "disk"}}, "virtual paths cannot hold files"),
    ],
)
def test_omero_rejections(layer, needle):
    with pytest.raises(CompileError, match=needle):
        compile_plate(make_layout(2, fmt="omero"), DEMO, pipeline_layer=P(layer))


# ---------------------------------------------------------------------------------- well filters
WELLS = ("A01", "A02", "A03", "B01", "B02", "B03", "C01")


@pytest.mark.parametrize(
    ("flt", "mode", "expected"),
    [
        (None, "include", WELLS),
        ("all", "include", WELLS),
        (2, "include", ("A01", "A02")),
        ("A01,B02", "include", ("A01", "B02")),
        (["b02", "R01C01"], "include", ("A01", "B02")),
        ("row:B", "include", ("B01", "B02", "B03")),
        ("col:2-3", "include", ("A02", "A03", "B02", "B03")),
        ("A02:B03", "include", ("A02", "A03", "B02", "B03")),
        ("row:A", "exclude", ("B01", "B02", "B03", "C01")),
    ],
)
def test_well_filters(flt, mode, expected):
    assert select_wells(WELLS, flt, mode) == expected
