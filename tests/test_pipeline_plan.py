"""Typed, frozen plans: backends are the enum, output locations are per well, zarr settings and
task results are models, and fingerprints depend on content only."""

from __future__ import annotations

import pickle

import pytest
from helpers import make_layout
from pydantic import ValidationError

import prefect_hcs.processing  # noqa: F401 - registers functions
from prefect_hcs.config import load_layer
from prefect_hcs.config.enums import Backend, ZarrCompressor
from prefect_hcs.pipeline.compiler import compile_plate
from prefect_hcs.pipeline.model import load_pipeline
from prefect_hcs.pipeline.plan import ZarrSettings
from prefect_hcs.runtime.results import ChunkOutcome, WellStepRun

DEMO = load_pipeline("demo")


def test_backends_are_the_enum_and_serialise_as_plain_strings() -> None:
    plan = compile_plate(make_layout(2), DEMO)
    for p in plan.step_plans:
        for b in (p.read_backend, p.write_backend, p.materialized_backend):
            assert type(b) is Backend
    assert type(plan.output.root_backend) is Backend and plan.output.image_backend is Backend.ZARR
    dumped = plan.plan("A01", 0).model_dump(mode="json")
    assert dumped["read_backend"] == "disk" and dumped["write_backend"] == "memory"


def test_a_backend_outside_the_enum_is_refused() -> None:
    p = compile_plate(make_layout(1), DEMO).plan("A01", 0)
    data = p.model_dump()
    data["read_backend"] = "ftp"
    with pytest.raises(ValidationError):
        type(p)(**data)


def test_zarr_settings_are_a_model_from_the_resolved_config() -> None:
    layer = load_layer(
        {"zarr_config": {"compressor": "blosc", "compression_level": 5, "chunk_size": 256}},
        layer="global",
    )
    plan = compile_plate(make_layout(1), DEMO, global_layer=layer)
    assert plan.output.zarr == ZarrSettings(
        compressor=ZarrCompressor.BLOSC, compression_level=5, chunk_size=256
    )


def test_completion_markers_have_one_location_per_well() -> None:
    disk = compile_plate(make_layout(3), DEMO).output
    assert set(disk.done_dirs) == {"A01", "A02", "A03"}
    assert disk.done_dir("A02") == "/data/plates/P1_hcs/.hcs-done"
    omero = compile_plate(make_layout(2, fmt="omero"), DEMO).output
    assert omero.done_dir("A02") == "omero://plate_7/A02/outputs/.hcs-done"
    assert "{well}" not in str(omero.model_dump())


def test_plans_are_frozen() -> None:
    plan = compile_plate(make_layout(1), DEMO)
    with pytest.raises(ValidationError):
        plan.output.zarr.chunk_size = 3  # type: ignore[misc]


def test_equal_content_gives_equal_fingerprints() -> None:
    a = compile_plate(make_layout(4), DEMO)
    b = compile_plate(make_layout(4), load_pipeline("demo"))
    assert a.fingerprint == b.fingerprint and a.fingerprints() == b.fingerprints()
    other = compile_plate(make_layout(4, url="/data/plates/P2"), DEMO)
    assert other.fingerprint != a.fingerprint


def test_task_results_are_models_that_cross_processes() -> None:
    run = WellStepRun(well="A01", step="count", seconds=0.5, tables={"m": 3}, pid=1)
    outcome = ChunkOutcome(results=(run,), failures={"A02": "ValueError: bad"})
    assert pickle.loads(pickle.dumps(outcome)) == outcome
    assert outcome.results[0].tables == {"m": 3}
    with pytest.raises(ValidationError):
        WellStepRun(well="A01", step="count", seconds="slow", pid=1)  # type: ignore[arg-type]
