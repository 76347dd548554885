"""What a plate run's process holds: no module a run does not need, nothing kept per well.

Peak RSS of the flow against the bare loop is measured by `benchmarks/run.py --only memory`;
these tests pin the causes found there, each of which fails without its fix.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from helpers import make_layout
from prefect import Flow

import prefect_hcs.processing  # noqa: F401 - registers functions
from prefect_hcs.pipeline.compiler import compile_plate
from prefect_hcs.pipeline.model import load_pipeline
from prefect_hcs.pipeline.plan import StepPlan
from prefect_hcs.runtime.flow import process_plate
from prefect_hcs.testing.synthetic import make_plate

PLAIN_PARAMETERS = [
    {"plate": "/data/P1", "pipeline": "demo", "global_config": None, "overwrite": False},
    {
        "plate": "s3://raw/P2",
        "pipeline": {"name": "p", "steps": [{"function": "f", "kwargs": {"a": 1.5, "b": [1, 2]}}]},
        "storage_options": {"credentials_block": "raw", "anon": False, "n": 3},
        "output_storage_options": {"endpoint_url": "http://minio:9000", "t": (1, (2, 3))},
    },
]


@pytest.mark.parametrize("parameters", PLAIN_PARAMETERS)
def test_plain_parameters_are_stored_as_prefect_stores_them(parameters):
    ours = process_plate.serialize_parameters(parameters)
    assert ours == Flow.serialize_parameters(process_plate, parameters)
    assert json.dumps(ours)  # JSON as it is sent


def test_other_parameters_go_through_prefects_serializer():
    parameters = {"plate": Path("/data/P1"), "storage_options": {1: "int key"}}
    ours = process_plate.serialize_parameters(parameters)
    assert ours == Flow.serialize_parameters(process_plate, parameters)
    assert ours["plate"] == "/data/P1"


_RUN = """
import json, sys
from prefect_hcs.runtime.flow import process_plate
state = process_plate(plate=sys.argv[1], return_state=True)
assert state.is_completed(), state.message
heavy = sorted(m for m in ("fastapi", "fastapi.encoders") if m in sys.modules)
print(json.dumps({"flow_run_id": str(state.state_details.flow_run_id), "heavy": heavy}))
"""


@pytest.mark.server
def test_a_plate_run_does_not_import_fastapi(prefect_server, tmp_path):
    plate = tmp_path / "P"
    make_plate(str(plate), format="imagexpress", wells=["A01"], sites=1, channels=1, z=1, size=64)
    out = subprocess.run(
        [sys.executable, "-c", _RUN, str(plate)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(result["flow_run_id"])
    assert run.parameters == {"plate": str(plate), "pipeline": "demo", "global_config": None,
                              "pipeline_config": None, "storage_options": None,
                              "overwrite": False, "output_storage_options": None}  # fmt: skip


def _retained_bytes_of_a_compile(n_wells: int):
    layout, demo = make_layout(n_wells), load_pipeline("demo")
    compile_plate(layout, demo)  # caches and lazy imports are not the plan's
    gc.collect()
    tracemalloc.start()
    try:
        plan = compile_plate(layout, demo)
        gc.collect()
        return plan, tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def test_a_compiled_plan_stays_small_per_well_and_step():
    # 96 wells x 5 steps, 24 source planes a well: 7.8 KB a step plan when every plan and plane
    # had its own pydantic fields set, 3.2 KB with them shared (Python 3.11, pydantic 2.12)
    plan, retained = _retained_bytes_of_a_compile(96)
    assert retained / len(plan.step_plans) < 4500


def test_shared_fields_sets_keep_every_plans_own_meaning():
    plan = compile_plate(make_layout(4), load_pipeline("demo"))
    every_field = set(StepPlan.model_fields)
    assert all(p.model_fields_set == every_field for p in plan.step_plans)
    first, second = plan.step_plans[0], plan.step_plans[1]
    assert first.__pydantic_fields_set__ is second.__pydantic_fields_set__  # one object
    copy = first.model_copy(update={"well": "H12"})
    assert copy.well == "H12" and second.model_fields_set == every_field
    planes = [sp for p in plan.step_plans for sp in p.source_planes]
    assert planes and all(sp.model_fields_set == {"site", "channel", "z", "timepoint", "url"}
                          for sp in planes)  # fmt: skip
    assert first.with_fingerprint().fingerprint == first.fingerprint


def test_a_plate_layout_stays_small_per_plane(tmp_path):
    from prefect_hcs.storage.plates import discover_plate

    wells = [f"{r}{c:02d}" for r in "AB" for c in range(1, 9)]
    make_plate(str(tmp_path / "P"), format="imagexpress", wells=wells, sites=4, channels=2, z=3,
               size=64)  # fmt: skip
    discover_plate(str(tmp_path / "P"), None)
    gc.collect()
    tracemalloc.start()
    try:
        layout = discover_plate(str(tmp_path / "P"), None)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # 2.1 KB a plane when every ImageRef had its own pydantic fields set, 0.9 KB shared
    assert len(layout.images) == 16 * 24
    assert retained / len(layout.images) < 1200
    sets = {frozenset(r.model_fields_set) for r in layout.images}
    assert len({id(r.__pydantic_fields_set__) for r in layout.images}) == len(sets)
