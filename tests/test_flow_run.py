"""Full plate runs through a real Prefect server: both formats, ground truth, API records, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import wait_for_task_runs

from prefect_hcs.formats.validate_zarr import validate_plate
from prefect_hcs.runtime import io as hio
from prefect_hcs.testing.synthetic import make_plate

pytestmark = pytest.mark.server
WELLS = ["A01", "A02", "B01", "B02"]


def _run(plate: str, **params):
    from prefect_hcs.runtime.flow import process_plate

    return process_plate(plate=plate, return_state=True, **params)


@pytest.mark.parametrize("fmt", ["imagexpress", "phenix"])
def test_plate_run_end_to_end(prefect_server, tmp_path, fmt):
    plate = tmp_path / f"Plate_{fmt}"
    truth = make_plate(
        str(plate), format=fmt, wells=WELLS, sites=4, channels=2, z=3, size=256, seed=11
    )
    state = _run(str(plate))
    assert state.is_completed(), state.message
    summary = state.result()
    zarr_url = summary["output"]
    assert zarr_url == str(tmp_path / f"Plate_{fmt}_hcs" / f"Plate_{fmt}.ome.zarr")
    assert validate_plate(zarr_url) == []

    # nuclei counts within 10 % of the generator's ground truth
    rows = hio.csv_to_rows(hio.read_bytes(summary["tables"]["count.measurements"]))
    counts = {r["well"]: int(r["nuclei_count"]) for r in rows}
    assert set(counts) == set(WELLS)
    for w in WELLS:
        true = truth["wells"][w]["nuclei"]
        assert abs(counts[w] - true) <= 0.1 * true, (w, counts[w], true)

    # stitched tiles within 2 px of the ground-truth positions (relative to site 1)
    pos = hio.csv_to_rows(hio.read_bytes(summary["tables"]["stitch.tile_positions"]))
    for w in WELLS:
        gt = truth["wells"][w]["tile_positions"]
        mine = {int(r["site"]): (float(r["y"]), float(r["x"])) for r in pos if r["well"] == w}
        g0, m0 = gt["1"], mine[1]
        for site, (gy, gx) in gt.items():
            my, mx = mine[int(site)]
            assert abs((my - m0[0]) - (gy - g0[0])) <= 2 and abs((mx - m0[1]) - (gx - g0[1])) <= 2

    # the OME-Zarr opens with ome-zarr's reader
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(zarr_url))())
    assert [type(spec).__name__ for spec in nodes[0].specs] == ["Plate"]
    assert nodes[0].metadata["channel_names"] == [truth["channel_names"][c] for c in ("1", "2")]
    assert nodes[0].data[0].shape[:3] == (1, 2, 1)  # t, c, z of the tiled plate image

    # every task run reached a final state in the API, named by step and well
    flow_run_id = state.state_details.flow_run_id
    runs = wait_for_task_runs(flow_run_id, min_count=4 + 4)  # plate tasks + one per chunk
    names = {r.name for r in runs}
    assert {"project→count · A01", "project→count · B02", "project→count · A02"} <= names
    assert len(runs) == 4 + 4  # every step of a chunk runs in its one task
    assert all(r.state.is_completed() for r in runs)


def test_corrupt_tiff_fails_the_well_with_a_clear_message(prefect_server, tmp_path):
    plate = tmp_path / "Bad"
    make_plate(
        str(plate),
        format="imagexpress",
        wells=["A01", "A02"],
        sites=4,
        channels=1,
        z=1,
        size=128,
        seed=3,
    )
    victim = sorted(p for p in plate.rglob("*_A02_s3_w1*.tif"))[0]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated
    state = _run(str(plate))
    assert state.is_failed()
    msg = str(state.result(raise_on_failure=False))
    assert "A02" in msg and "project" in msg and victim.name in msg
    zarr_url = tmp_path / "Bad_hcs" / "Bad.ome.zarr"
    attrs = json.loads((zarr_url / "zarr.json").read_text())["attributes"]
    assert attrs["prefect_hcs"]["status"] != "complete"  # never marked complete


def test_demo_command(prefect_server, tmp_path):
    exe = Path(sys.executable).with_name("prefect-hcs")
    out = subprocess.run(
        [str(exe), "demo", "--out", str(tmp_path / "demo"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "DemoPlate.ome.zarr" in out.stdout and "/runs/flow-run/" in out.stdout
    assert "nuclei counted/true" in out.stdout
    everything = [p for p in (tmp_path).rglob("*")]
    assert all(str(p).startswith(str(tmp_path / "demo")) for p in everything)


def test_plan_json_command(tmp_path):
    plate = tmp_path / "P"
    make_plate(
        str(plate), format="phenix", wells=["A01", "B02"], sites=4, channels=2, z=1, size=64, seed=1
    )
    exe = Path(sys.executable).with_name("prefect-hcs")
    out = subprocess.run(
        [str(exe), "plan", str(plate), "--json"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["wells"] == ["A01", "B02"] and len(data["step_plans"]) == 10
    keys = {"well", "step", "read_backend", "write_backend", "materialized_backend", "output_dir",
            "materialized_output_dir", "fingerprint"}  # fmt: skip
    assert all(keys <= set(p) for p in data["step_plans"])
    again = subprocess.run(
        [str(exe), "plan", str(plate), "--json"], capture_output=True, text=True, timeout=120
    )
    assert json.loads(again.stdout)["fingerprint"] == data["fingerprint"]


def test_output_arrays_match_a_direct_computation(prefect_server, tmp_path):
    """The flow's stitched output equals running the same functions by hand (no drift)."""
    import zarr

    from prefect_hcs.formats.omezarr import read_well_image

    plate = tmp_path / "Same"
    make_plate(
        str(plate), format="imagexpress", wells=["A01"], sites=4, channels=2, z=2, size=128, seed=5
    )
    state = _run(str(plate))
    assert state.is_completed(), state.message
    img = read_well_image(state.result()["output"], "A01", 0)
    assert img.shape[:3] == (1, 2, 1) and img.dtype == np.uint16
    assert (
        zarr.open_group(state.result()["output"], mode="r").attrs["prefect_hcs"]["status"]
        == "complete"
    )


def test_plate_from_any_fsspec_url_memory(prefect_server):
    """A plate on `memory://` (any fsspec URL): read, processed and written through fsspec."""
    import uuid

    url = f"memory://plates-{uuid.uuid4().hex[:8]}/MemPlate"
    truth = make_plate(
        url, format="phenix", wells=["A01", "A02"], sites=4, channels=2, z=1, size=256, seed=4
    )
    state = _run(url)
    assert state.is_completed(), state.message
    out = state.result()["output"]
    assert out.startswith("memory://") and out.endswith("MemPlate_hcs/MemPlate.ome.zarr")
    assert validate_plate(out) == []
    rows = hio.csv_to_rows(hio.read_bytes(state.result()["tables"]["count.measurements"]))
    for r in rows:
        true = truth["wells"][r["well"]]["nuclei"]
        assert abs(int(r["nuclei_count"]) - true) <= 0.1 * true


def test_demo_command_with_omero_standin(prefect_server, tmp_path):
    exe = Path(sys.executable).with_name("prefect-hcs")
    out = subprocess.run(
        [str(exe), "demo", "--omero", "--out", str(tmp_path / "d"), "--no-progress"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "OMERO outputs:" in out.stdout and "FileAnnotation" in out.stdout
    assert "/outputs/images/A01.tif" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # nothing outside --out


def test_secret_storage_options_are_refused_before_the_run(tmp_path):
    exe = Path(sys.executable).with_name("prefect-hcs")
    out = subprocess.run(
        [str(exe), "run", str(tmp_path), "--storage-options", '{"password": "hunter2"}'],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert out.returncode == 2
    assert "looks like a secret" in out.stderr and "hunter2" not in out.stderr + out.stdout
