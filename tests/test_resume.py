"""Crash safety and resume: SIGKILL mid-plate, retry, and compare with a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import wait_for_task_runs

from prefect_hcs.formats.omezarr import read_well_image
from prefect_hcs.formats.validate_zarr import validate_plate
from prefect_hcs.testing.synthetic import make_plate

pytestmark = pytest.mark.server
WELLS = ["A01", "A02", "A03", "A04", "B01", "B02", "B03", "B04"]

_RUNNER = """
import sys
from prefect_hcs.runtime.flow import process_plate
process_plate(plate=sys.argv[1], global_config=sys.argv[2])
"""


def _config(tmp: Path, name: str, out: Path) -> Path:
    cfg = tmp / f"{name}.yaml"
    # one worker: wells finish one chunk after another, so a kill lands mid-plate
    cfg.write_text(f"num_workers: 1\npath_planning_config: {{global_output_folder: {out}}}\n")
    return cfg


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_sigkill_mid_plate_then_retry_resumes_and_matches_a_clean_run(prefect_server, tmp_path):
    from prefect_hcs.runtime.flow import process_plate

    plate = tmp_path / "Kill"
    make_plate(
        str(plate), format="imagexpress", wells=WELLS, sites=4, channels=2, z=3, size=256, seed=9
    )
    out = tmp_path / "out"
    cfg = _config(tmp_path, "kill", out)
    done_dir = out / "Kill_hcs" / ".hcs-done"

    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, str(plate), str(cfg)],
        env=dict(os.environ), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            markers = list(done_dir.glob("*.json")) if done_dir.exists() else []
            if len(markers) >= 2:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("no well completed within the time limit")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    done_before = sorted(p.stem for p in done_dir.glob("*.json"))
    assert 2 <= len(done_before) < len(WELLS), done_before
    # a write interrupted by the kill leaves a temporary file at worst: plant one to be sure
    tables = out / "Kill_hcs" / "tables" / "count"
    tables.mkdir(parents=True, exist_ok=True)
    (tables / "A01_measurements.csv.tmp-0123456789ab").write_bytes(b"partial")
    zarr_root = out / "Kill_hcs" / "Kill.ome.zarr"
    before = {w: _files(zarr_root / w[0] / str(int(w[1:]))) for w in done_before}

    state = process_plate(plate=str(plate), global_config=str(cfg), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    # (a) completed wells were not recomputed
    assert summary["wells_skipped"] == done_before
    for w in done_before:
        assert _files(zarr_root / w[0] / str(int(w[1:]))) == before[w], w
    # (c) no partial file is left, and the plate validates
    assert not [p for p in (out / "Kill_hcs").rglob("*") if ".tmp-" in p.name]
    assert validate_plate(str(zarr_root)) == []

    # (b) outputs equal a clean run's: arrays for the OME-Zarr, bytes for the tables
    clean_out = tmp_path / "clean"
    clean = process_plate(
        plate=str(plate),
        global_config=str(_config(tmp_path, "clean", clean_out)),
        return_state=True,
    )
    assert clean.is_completed(), clean.message
    clean_zarr = clean_out / "Kill_hcs" / "Kill.ome.zarr"
    for w in WELLS:
        np.testing.assert_array_equal(
            read_well_image(str(zarr_root), w, 0), read_well_image(str(clean_zarr), w, 0)
        )
    for name in ("count_measurements.csv", "stitch_tile_positions.csv"):
        assert (out / "Kill_hcs" / name).read_bytes() == (
            clean_out / "Kill_hcs" / name
        ).read_bytes()


def test_a_replaced_input_file_invalidates_only_its_well(prefect_server, tmp_path):
    from prefect_hcs.runtime.flow import process_plate

    plate = tmp_path / "Touch"
    make_plate(
        str(plate),
        format="imagexpress",
        wells=["A01", "A02"],
        sites=4,
        channels=1,
        z=1,
        size=128,
        seed=2,
    )
    assert process_plate(plate=str(plate), return_state=True).is_completed()
    victim = sorted(plate.rglob("*_A02_s1_w1*.tif"))[0]
    victim.write_bytes(victim.read_bytes())  # same bytes, new file: a replaced file
    os.utime(victim, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    again = process_plate(plate=str(plate), return_state=True)
    assert again.is_completed()
    assert again.result()["wells_skipped"] == ["A01"]


def test_deterministic_failures_are_not_retried_and_fail_only_their_well(prefect_server, tmp_path):
    from prefect_hcs.runtime.flow import process_plate

    plate = tmp_path / "Det"
    make_plate(
        str(plate),
        format="imagexpress",
        wells=["A01", "A02", "A03"],
        sites=4,
        channels=1,
        z=1,
        size=128,
        seed=2,
    )
    victim = sorted(plate.rglob("*_A02_s2_w1*.tif"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    cfg = tmp_path / "g.yaml"
    cfg.write_text("num_workers: 1\nexecution_config: {retries: 3, retry_delay_seconds: 0}\n")
    state = process_plate(plate=str(plate), global_config=str(cfg), return_state=True)
    assert state.is_failed()
    msg = str(state.result(raise_on_failure=False))
    assert "1 well(s) failed" in msg and "A02: step 'project'" in msg and victim.name in msg
    steps = wait_for_task_runs(state.state_details.flow_run_id, steps_only=True)
    assert steps and all(r.run_count == 1 for r in steps)  # nothing retried
    # the other wells completed every step; a retry after the file is replaced runs only A02
    plate_files = {p.name for p in plate.rglob("*.tif")}
    assert victim.name in plate_files
    make_plate(
        str(tmp_path / "fresh"),
        format="imagexpress",
        wells=["A01", "A02", "A03"],
        sites=4,
        channels=1,
        z=1,
        size=128,
        seed=2,
    )
    fresh = sorted((tmp_path / "fresh").rglob("*_A02_s2_w1*.tif"))[0]
    victim.write_bytes(fresh.read_bytes())
    retry = process_plate(plate=str(plate), global_config=str(cfg), return_state=True)
    assert retry.is_completed(), retry.message
    assert retry.result()["wells_skipped"] == ["A01", "A03"]
