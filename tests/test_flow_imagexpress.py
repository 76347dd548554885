"""MetaXpress acquisition folders and exports through `plan` and a full run (real Prefect server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_hcs.formats.validate_zarr import validate_plate
from prefect_hcs.testing.synthetic_imagexpress import MIXED_CHANNELS, make_imagexpress_plate

pytestmark = pytest.mark.server


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("prefect-hcs")), *args],
        capture_output=True, text=True, env=os.environ, timeout=300,
    )  # fmt: skip


def _zarr_attrs(zarr_url: str, *parts: str) -> dict:
    return json.loads(Path(zarr_url, *parts, "zarr.json").read_text())["attributes"]["ome"]


def _run(plate: str, **params):
    from prefect_hcs.runtime.flow import process_plate

    return process_plate(plate=plate, return_state=True, **params)


def test_acquisition_folder_plan_json_reports_the_layout(tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path), variant="acquisition", wells=["B03", "C04"], sites=4,
        channels=MIXED_CHANNELS, z=3, timepoints=2, size=64,
    )  # fmt: skip
    done = _cli("plan", truth["plate_path"], "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)["layout"]
    assert found["vendor"] == "imagexpress" and found["variant"] == "MetaXpress acquisition"
    assert found["wells"] == ["B03", "C04"] and found["grid"] == [2, 2]
    assert [s["x_um"] for s in found["sites"]] == [
        truth["wells"]["B03"]["stage_positions_um"][str(s)][0] for s in (1, 2, 3, 4)
    ]
    assert [(c["channel"], c["name"], c["in_stack"]) for c in found["channels"]] == [
        (1, "DAPI", True), (2, "FITC", True), (3, "Cy5", False), (4, "TexasRed", True),
    ]  # fmt: skip
    assert found["z"] == {"count": 3, "spacing_um": truth["z_step_um"]}
    assert found["timepoints"] == {"count": 2, "interval_s": truth["interval_s"]}
    assert found["pixel_size_um"] == truth["pixel_size_um"]
    assert found["projections"] == {"count": 32, "channels": [1, 3], "methods": ["maximum"]}
    assert found["absent"]["channel_z_t"] == sorted(truth["absent"])
    assert found["padded"]["count"] == 0
    table = _cli("plan", truth["plate_path"])
    assert table.returncode == 0, table.stderr
    assert "MetaXpress acquisition" in table.stdout and "not acquired" in table.stdout


def test_export_plan_reports_padding(tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path), variant="export", wells=["A01"], sites=2, channels=MIXED_CHANNELS,
        z=3, timepoints=1, size=48,
    )  # fmt: skip
    done = _cli("plan", truth["plate_path"], "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["layout"]["variant"] == "MetaXpress export"
    assert report["layout"]["padded"]["count"] == len(truth["padded"]) == 2 * (2 + 3)
    assert any("byte-identical padding" in w for w in report["warnings"])


def test_bad_plane_source_is_one_clear_line(tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path / "p"), variant="export", wells=["A01"], sites=2, channels=1, z=1, size=32
    )
    layer = tmp_path / "pipeline.yaml"
    layer.write_text("vfs_config:\n  plane_source: projections\n")
    done = _cli("plan", truth["plate_path"], "--pipeline-config", str(layer))
    assert done.returncode != 0
    assert "has no instrument projections" in " ".join((done.stderr + done.stdout).split())
    assert "Traceback" not in done.stderr


def _check_zarr(zarr_url: str, truth: dict, channel_names: list[str]) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    assert validate_plate(zarr_url) == []
    nodes = list(Reader(parse_url(zarr_url))())
    assert nodes[0].metadata["channel_names"] == channel_names
    wells = [w["path"] for w in _zarr_attrs(zarr_url)["plate"]["wells"]]
    assert wells == [f"{w[0]}/{int(w[1:])}" for w in truth["wells"]]
    field = _zarr_attrs(zarr_url, wells[0], "0")["multiscales"][0]
    scale = field["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[-1] == pytest.approx(truth["pixel_size_um"])


def test_acquisition_folder_full_run_stack(prefect_server, tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path / "acq"), variant="acquisition", wells=["B03", "C04"], sites=4,
        channels=MIXED_CHANNELS, z=3, timepoints=2, size=128, seed=4,
    )  # fmt: skip
    state = _run(truth["plate_path"], global_config=None)
    assert state.is_completed(), state.message
    summary = state.result()
    _check_zarr(summary["output"], truth, ["DAPI", "FITC", "TexasRed"])


def test_export_full_run_projections(prefect_server, tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path / "exp"), variant="export", wells=["A01", "B02"], sites=4,
        channels=MIXED_CHANNELS, z=3, timepoints=1, size=128, seed=6,
    )  # fmt: skip
    layer = tmp_path / "pipeline.yaml"
    layer.write_text("vfs_config:\n  plane_source: projections\n")
    state = _run(truth["plate_path"], pipeline_config=str(layer))
    assert state.is_completed(), state.message
    _check_zarr(state.result()["output"], truth, ["DAPI", "Cy5"])


def test_make_plate_cli_variants(tmp_path: Path) -> None:
    made = _cli(
        "make-plate", str(tmp_path / "acq"), "--variant", "acquisition", "--mixed",
        "--wells", "A01,A02", "--sites", "2", "--timepoints", "2", "--size", "48",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    truth = json.loads((tmp_path / "acq" / "ground_truth.json").read_text())
    assert truth["variant"] == "MetaXpress acquisition" and len(truth["channels"]) == 4
    done = _cli("plan", truth["plate_path"], "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["layout"]["projections"]["channels"] == [1, 3]
    classic = _cli("make-plate", str(tmp_path / "classic"), "--wells", "A01", "--size", "48")
    assert classic.returncode == 0 and (tmp_path / "classic" / "SynthPlate.HTD").exists()
    bad = _cli("make-plate", str(tmp_path / "x"), "--format", "phenix", "--variant", "export")
    assert bad.returncode == 2 and "'export' is not valid for phenix" in " ".join(
        bad.stderr.split()
    )


def test_acquisition_physical_metadata_reaches_the_ome_zarr(prefect_server, tmp_path: Path) -> None:
    """A pipeline that keeps z, t and every site: z spacing, interval and stage translations."""
    truth = make_imagexpress_plate(
        str(tmp_path / "acq"), variant="acquisition", wells=["B03"], sites=4,
        channels=2, z=3, timepoints=2, size=64, seed=2, z_step_um=1.25, interval_s=600.0,
    )  # fmt: skip
    pipeline = {"name": "keep", "steps": [{"name": "normalize", "func": "percentile_normalize"}]}
    state = _run(truth["plate_path"], pipeline=pipeline)
    assert state.is_completed(), state.message
    zarr_url = state.result()["output"]
    assert validate_plate(zarr_url) == []
    stage = truth["wells"]["B03"]["stage_positions_um"]
    x0 = min(p[0] for p in stage.values())
    y0 = min(p[1] for p in stage.values())
    for field in range(4):
        ms = _zarr_attrs(zarr_url, "B", "3", str(field))["multiscales"][0]
        scale, shift = ms["datasets"][0]["coordinateTransformations"]
        assert scale["scale"] == pytest.approx(
            [600.0, 1.0, 1.25, truth["pixel_size_um"], truth["pixel_size_um"]]
        )
        x, y = stage[str(field + 1)]
        assert shift["translation"][-2:] == pytest.approx([y - y0, x - x0])
        assert [a.get("unit") for a in ms["axes"]] == [
            "second",
            None,
            "micrometer",
            "micrometer",
            "micrometer",
        ]
