"""What a plate run's process holds: no module a run does not need, nothing kept per well.

Peak RSS of the flow against the bare loop is measured by `benchmarks/run.py --only memory`;
these tests pin the causes found there, each of which fails without its fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import Flow

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
