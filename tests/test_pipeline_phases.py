"""The compiler's phases, each on its own: discover → resolve layers → check the pipeline →
choose backends → plan paths → chunk → fingerprint. Each returns its result and its problems."""

from __future__ import annotations

import pytest
from helpers import make_layout

import prefect_hcs.processing  # noqa: F401 - registers functions
from prefect_hcs.config import load_layer
from prefect_hcs.config.enums import Backend
from prefect_hcs.pipeline.backends import choose_backends, materialized_backend, output_root
from prefect_hcs.pipeline.chunks import MAX_CHUNK_WELLS, chunk_wells
from prefect_hcs.pipeline.compiler import compile_plate
from prefect_hcs.pipeline.discover import discover
from prefect_hcs.pipeline.fingerprint import fingerprint_steps
from prefect_hcs.pipeline.model import load_pipeline
from prefect_hcs.pipeline.paths import plan_paths
from prefect_hcs.pipeline.plan import PLATE_TASKS, StepPlan
from prefect_hcs.pipeline.resolution import resolve_layers
from prefect_hcs.pipeline.shapes import check_pipeline
from prefect_hcs.pipeline.urls import normal_url, parent_and_name

DEMO = load_pipeline("demo")


def G(data):
    return load_layer(data, layer="global")


def pipe(*steps):
    return load_pipeline({"name": "t", "steps": list(steps)})


def phases(layout, pipeline, global_layer=None):
    """Run phases 1-4 and return their results."""
    found = discover(layout, pipeline, None, None)
    res = resolve_layers(found, global_layer, None)
    checked = check_pipeline(res, found.steps)
    chosen = choose_backends(res, found.steps, checked)
    return found, res, checked, chosen


# 1. discover ------------------------------------------------------------------------------------
def test_discover_keeps_enabled_steps_and_refuses_secret_options():
    p = pipe({"name": "a", "func": "max_projection"}, {"name": "b", "func": "max_projection"})
    disabled = p.model_copy(update={"steps": [p.steps[0].model_copy(update={"enabled": False})]})
    found = discover(make_layout(2), p, {"anon": True}, {"password": "x"})
    assert [s.name for s in found.steps] == ["a", "b"]
    assert len(found.problems) == 1 and "'password' looks like a secret" in found.problems[0]
    assert discover(make_layout(2), disabled, None, None).problems == (
        "every step of the pipeline is disabled",
    )
    assert found.report["wells"] and found.stage == {}


# 2. resolve layers ------------------------------------------------------------------------------
def test_resolve_layers_selects_run_and_step_wells():
    p = pipe(
        {
            "name": "a",
            "func": "max_projection",
            "config": {"step_well_filter_config": {"well_filter": "A02"}},
        }
    )
    res = resolve_layers(
        discover(make_layout(4), p, None, None), G({"well_filter_config": {"well_filter": 3}}), None
    )
    assert res.wells == ("A01", "A02", "A03") and not res.problems
    assert res.step_wells[0].runs == {"A02"}
    assert len(res.source_fingerprint) == 64


def test_resolve_layers_reports_an_empty_or_unreadable_selection():
    found = discover(make_layout(2), DEMO, None, None)
    empty = resolve_layers(found, G({"well_filter_config": {"well_filter": "H12"}}), None)
    assert empty.wells == () and "the well selection is empty" in empty.problems[0]
    bad = resolve_layers(found, G({"well_filter_config": {"well_filter": "Q"}}), None)
    assert bad.wells == () and bad.problems[0].startswith("well_filter_config.well_filter: ")


# 3. check the pipeline --------------------------------------------------------------------------
def test_check_pipeline_tracks_the_stack_and_the_tables():
    found, res, checked, _ = phases(make_layout(2), DEMO)
    assert not checked.problems
    assert checked.sizes == {"timepoint": 1, "channel": 2, "z": 1, "site": 1}  # projected, stitched
    assert checked.field_shape[0] > 256  # the stitched canvas bound
    assert checked.steps[-1].special_outputs == ("measurements",)
    assert [c.reads_source for c in checked.steps] == [True, False, False, False, False]
    assert set(checked.steps[0].code_versions) == {"max_projection"}


def test_check_pipeline_reports_each_bad_step():
    p = pipe(
        {"name": "a", "func": "max_projektion"},
        {"name": "b", "func": {"name": "tophat_background", "kwargs": {"radiuss": 3}}},
    )
    _, _, checked, _ = phases(make_layout(1), p)
    assert len(checked.problems) == 2
    assert checked.problems[0].startswith("step 0 'a': ")
    assert "radiuss" in checked.problems[1]


# 4. choose backends -----------------------------------------------------------------------------
def test_choose_backends_threads_keep_intermediates_in_memory():
    *_, chosen = phases(make_layout(2), DEMO)
    assert chosen.in_memory and chosen.root == "/data/plates/P1_hcs"
    assert chosen.intermediate_root.startswith("memory://prefect-hcs/")
    assert [s.read for s in chosen.steps] == [Backend.DISK] + [Backend.MEMORY] * 4
    assert chosen.steps[-1].write is Backend.ZARR and chosen.zarr_url.endswith("P1.ome.zarr")
    assert "final output: zarr" in chosen.steps[-1].write_reason


def test_choose_backends_dask_writes_intermediates_to_disk():
    layer = G({"execution_config": {"task_runner": "dask"}})
    *_, chosen = phases(make_layout(2), DEMO, layer)
    assert not chosen.in_memory and chosen.intermediate_root == "/data/plates/P1_hcs/.intermediate"
    assert chosen.steps[1].read is Backend.DISK and not chosen.problems


def test_output_root_and_materialized_backend_rules():
    res = resolve_layers(discover(make_layout(1, fmt="omero"), DEMO, None, None), None, None)
    root, backend, why = output_root(res.layout, res.base, "path_planning_config")
    assert (root, backend) == ("omero://plate_7/outputs", Backend.OMERO) and "OMERO plate" in why
    problems: list[str] = []
    chosen, reason = materialized_backend(res.layout, "step 0", "auto", backend, "", problems)
    assert chosen is Backend.OMERO and reason.startswith("auto") and not problems
    materialized_backend(res.layout, "step 0", "disk", backend, "", problems)
    assert "virtual paths cannot hold files" in problems[0]


def test_choose_backends_reports_a_read_backend_the_plate_cannot_take():
    *_, chosen = phases(make_layout(1), DEMO, G({"vfs_config": {"read_backend": "omero"}}))
    assert any("can only be read with 'disk'" in p for p in chosen.problems)


# 5. plan paths ----------------------------------------------------------------------------------
def test_plan_paths_gives_every_well_its_own_urls():
    found, res, checked, chosen = phases(make_layout(2), DEMO)
    paths = plan_paths(found, res, checked, chosen, None)
    assert not paths.problems and len(paths.drafts) == 2 * 5
    a01 = [d for d in paths.drafts if d["well"] == "A01"]
    assert a01[1]["read_from"] == a01[0]["output_url"]
    assert a01[-1]["output_url"] == "/data/plates/P1_hcs/P1.ome.zarr/A/1"
    assert a01[-1]["special_outputs"] == {
        "measurements": "/data/plates/P1_hcs/tables/count/A01_measurements.csv"
    }
    assert paths.output.tables["count.measurements"] == (
        "/data/plates/P1_hcs/count_measurements.csv"
    )
    assert paths.output.done_dirs == {w: "/data/plates/P1_hcs/.hcs-done" for w in ("A01", "A02")}


def test_plan_paths_keeps_writes_inside_their_roots():
    p = pipe(
        {
            "name": "a",
            "func": "max_projection",
            "config": {"step_materialization_config": {"enabled": True, "sub_dir": "ok"}},
        }
    )
    found, res, checked, chosen = phases(make_layout(1), p)
    paths = plan_paths(found, res, checked, chosen, None)
    assert not paths.problems
    assert paths.drafts[0]["materialized_url"] == "/data/plates/P1_hcs/ok/a/A01.tif"


def test_url_helpers():
    assert parent_and_name("s3://b/plates/P1/") == ("s3://b/plates", "P1")
    assert parent_and_name("P1") == (".", "P1")
    assert normal_url("file:///a/b/../c/") == "/a/c"


# 6. chunk ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n_wells", "budget", "workers"), [(384, 200, 4), (384, 30, 2), (5, 200, 1)]
)
def test_chunks_cover_every_well_once_within_the_budget(n_wells, budget, workers):
    wells = tuple(f"W{i}" for i in range(n_wells))
    chunks = chunk_wells(wells, budget, workers)
    assert tuple(w for c in chunks for w in c) == wells
    assert len(chunks) + PLATE_TASKS <= budget  # one task run per chunk, all steps
    assert chunk_wells((), budget, workers) == ()


@pytest.mark.parametrize(("n_wells", "workers"), [(24, 2), (96, 2), (96, 4)])
def test_chunks_shrink_to_single_wells_at_the_end_with_several_workers(n_wells, workers):
    sizes = [len(c) for c in chunk_wells(tuple(range(n_wells)), 200, workers)]
    assert sizes == sorted(sizes, reverse=True)  # the big chunks first
    assert max(sizes) <= MAX_CHUNK_WELLS and sizes[-workers:] == [1] * workers


def test_one_worker_gets_full_chunks_and_a_tight_budget_bigger_ones():
    assert [len(c) for c in chunk_wells(tuple(range(20)), 200, 1)] == [8, 8, 4]
    tight = chunk_wells(tuple(range(384)), 4 + 10, 2)
    assert len(tight) <= 10 and sum(map(len, tight)) == 384


# 7. fingerprint ---------------------------------------------------------------------------------
def test_fingerprints_equal_the_models_own_and_chain_per_well():
    found, res, checked, chosen = phases(make_layout(3), DEMO)
    paths = plan_paths(found, res, checked, chosen, None)
    plans = fingerprint_steps(paths.steps, paths.drafts, paths.source_json)
    for p in plans:
        assert p.with_fingerprint().fingerprint == p.fingerprint
        assert StepPlan.model_validate(p.model_dump()) == p  # what was built is valid
    a01 = [p for p in plans if p.well == "A01"]
    assert len({p.chain_fingerprint for p in a01}) == 5
    assert a01[0].fingerprint != plans[5].fingerprint  # another well, another fingerprint


def test_a_step_that_skips_a_well_fingerprints_without_its_function():
    def plan(func):
        p = pipe(
            {"name": "a", "func": "max_projection", "variable_components": ["z"]},
            {
                "name": "b",
                "func": func,
                "config": {"step_well_filter_config": {"well_filter": "A01"}},
            },
        )
        return compile_plate(make_layout(2), p)

    one, other = plan("tophat_background"), plan("percentile_normalize")
    assert one.plan("A02", 1).fingerprint == other.plan("A02", 1).fingerprint
    assert one.plan("A01", 1).fingerprint != other.plan("A01", 1).fingerprint


def test_compile_leaves_the_garbage_collector_as_it_found_it():
    import gc

    assert gc.isenabled()
    compile_plate(make_layout(1), DEMO)
    assert gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(Exception, match="cannot be compiled"):
            compile_plate(make_layout(1), pipe({"func": "max_projektion"}))
        assert not gc.isenabled()
    finally:
        gc.enable()
