"""Yokogawa CellVoyager CV7000/CV8000 measurement folders: layout, errors, plan and run.

Plates come from `synthetic_cellvoyager`, which writes the real layout: MeasurementData.mlf (IMG
records and an autofocus ERR record), MeasurementDetail.mrf, the .mes protocol, .wpi/.wpp, and
``<title>_<well>_T0001F001L01A01Z01C01.tif`` images, fields acquired in a snake.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from prefect_hcs.formats import PlateError, open_plate, read_plane
from prefect_hcs.testing.synthetic_cellvoyager import make_cellvoyager_plate

WELLS = ["B02", "C03"]


def _plate(root: str, **kw) -> dict:
    options = dict(wells=WELLS, sites=6, channels=3, z=3, timepoints=2, size=64, seed=2)
    return make_cellvoyager_plate(root, **{**options, **kw})


def test_layout_from_mlf_and_mrf(tmp_path):
    truth = _plate(str(tmp_path / "cv"), system="CV7000")
    layout = open_plate(str(tmp_path / "cv"))
    assert layout.format == "cellvoyager" and layout.variant == "CellVoyager CV7000"
    assert layout.plate_barcode == truth["title"]
    assert (layout.wells, layout.sites, layout.channels) == (
        tuple(WELLS),
        tuple(range(1, 7)),
        (1, 2, 3),
    )
    assert (layout.z_planes, layout.timepoints, layout.grid) == ((1, 2, 3), (1, 2), (2, 3))
    assert layout.pixel_size_um == pytest.approx(truth["pixel_size_um"])
    assert layout.z_spacing_um == pytest.approx(3.0)
    assert layout.time_interval_s == pytest.approx(900.0)
    assert layout.objective == "UPLSAPO20X (20x)"
    assert layout.channel_names == {1: "DAPI", 2: "GFP", 3: "mCherry"}
    assert layout.channel_info[2].excitation_nm == 488 and layout.channel_info[2].emission_nm == 525
    assert len(layout.images) == 2 * 6 * 3 * 3 * 2
    assert [w for w in layout.warnings if "AF Error" not in w] == []
    # The snake's field 4 (second row, acquired right to left) is raster site 6 (bottom-right).
    site6 = next(r for r in layout.images_for_well("B02") if r.site == 6)
    assert "F004" in site6.path
    x1, y1 = layout.field_position_um("B02", 1)
    x6, y6 = layout.field_position_um("B02", 6)
    step = truth["step_px"] * truth["pixel_size_um"]
    assert x6 - x1 == pytest.approx(2 * step, abs=0.2) and y1 - y6 == pytest.approx(step, abs=0.2)
    assert read_plane(str(tmp_path / "cv"), site6).shape == (64, 64)


def test_memory_filesystem_and_auto_detect():
    url = "memory://cv-detect"
    _plate(url, sites=1, z=1, timepoints=1, channels=1)
    try:
        layout = open_plate(url)
        assert layout.format == "cellvoyager" and layout.sites == (1,)
    finally:
        fsspec.filesystem("memory").rm("/cv-detect", recursive=True)


def test_listed_file_that_does_not_exist(tmp_path):
    _plate(str(tmp_path), sites=1, z=1, timepoints=1)
    victim = tmp_path / "CV-Plate-0042_C03_T0001F001L01A01Z01C02.tif"
    victim.unlink()
    with pytest.raises(
        PlateError,
        match=r"1 image file\(s\) listed in .*MeasurementData\.mlf do not exist: CV-Plate-0042_C03_T0001F001L01A01Z01C02\.tif",
    ):
        open_plate(str(tmp_path))


def test_missing_mrf_and_malformed_mlf(tmp_path):
    _plate(str(tmp_path), sites=1, z=1, timepoints=1)
    (tmp_path / "MeasurementDetail.mrf").rename(tmp_path / "elsewhere.mrf")
    with pytest.raises(PlateError, match="has MeasurementData.mlf but no MeasurementDetail.mrf"):
        open_plate(str(tmp_path))
    (tmp_path / "elsewhere.mrf").rename(tmp_path / "MeasurementDetail.mrf")
    mlf = tmp_path / "MeasurementData.mlf"
    mlf.write_text(mlf.read_text().replace("</bts:MeasurementData>", ""))
    with pytest.raises(
        PlateError, match=r"malformed CellVoyager file .*MeasurementData\.mlf: XML error at line"
    ):
        open_plate(str(tmp_path))


def test_hole_in_the_grid_names_the_plane(tmp_path):
    _plate(str(tmp_path), sites=1, z=2, timepoints=1, channels=1)
    mlf = tmp_path / "MeasurementData.mlf"
    lines = mlf.read_text().splitlines(keepends=True)
    kept = [line for line in lines if "C03_T0001F001L01A01Z02C01" not in line]
    mlf.write_text("".join(kept))
    (tmp_path / "CV-Plate-0042_C03_T0001F001L01A01Z02C01.tif").unlink()
    with pytest.raises(PlateError, match=r"1 planes missing .*\(C03, 1, 1, 2, 1\)"):
        open_plate(str(tmp_path))


def test_projection_records_are_not_z_planes(tmp_path):
    _plate(str(tmp_path), sites=1, z=2, timepoints=1, channels=1)
    mlf = tmp_path / "MeasurementData.mlf"
    text = mlf.read_text()
    record = next(line for line in text.splitlines() if "B02_T0001F001L01A01Z01C01" in line)
    (tmp_path / "Projection").mkdir()
    (tmp_path / "Projection" / "W0014F0001T0001Z000C1.tif").write_bytes(
        (tmp_path / "CV-Plate-0042_B02_T0001F001L01A01Z01C01.tif").read_bytes()
    )
    projection = record.replace('bts:Ch="1"', 'bts:ZImageProcessing="Maximum" bts:Ch="1"')
    projection = projection.replace(
        "CV-Plate-0042_B02_T0001F001L01A01Z01C01.tif", "Projection/W0014F0001T0001Z000C1.tif"
    )
    mlf.write_text(text.replace("</bts:MeasurementData>", projection + "\n</bts:MeasurementData>"))
    layout = open_plate(str(tmp_path))
    assert len(layout.images) == 2 * 2 and layout.z_planes == (1, 2)
    assert [(p.well, p.projection) for p in layout.projections] == [("B02", "maximum")]
    assert layout.projections[0].path.endswith("Projection/W0014F0001T0001Z000C1.tif")


def test_make_plate_cli_and_plan(tmp_path):
    exe = Path(sys.executable).with_name("prefect-hcs")
    out = subprocess.run(
        [str(exe), "make-plate", str(tmp_path / "cv"), "--format", "cellvoyager", "--wells", "2",
         "--sites", "4", "--z", "1", "--size", "64"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cv" / "MeasurementData.mlf").is_file()
    plan = subprocess.run(
        [str(exe), "plan", str(tmp_path / "cv"), "--json"], capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)
    assert data["plate_format"] == "cellvoyager" and data["wells"] == ["A01", "A02"]


@pytest.mark.server
def test_cellvoyager_plate_runs_end_to_end(prefect_server, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from prefect_hcs.formats.validate_zarr import validate_plate
    from prefect_hcs.runtime import io as hio
    from prefect_hcs.runtime.flow import process_plate

    truth = _plate(str(tmp_path / "CV"), sites=4, channels=2, z=3, timepoints=1, size=256)
    state = process_plate(plate=str(tmp_path / "CV"), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    zarr_url = summary["output"]
    assert validate_plate(zarr_url) == []
    rows = hio.csv_to_rows(hio.read_bytes(summary["tables"]["count.measurements"]))
    for row in rows:
        true = truth["wells"][row["well"]]["nuclei"]
        assert abs(int(row["nuclei_count"]) - true) <= 0.15 * true, (row, true)
    assert {r["well"] for r in rows} == set(WELLS)
    pos = hio.csv_to_rows(hio.read_bytes(summary["tables"]["stitch.tile_positions"]))
    for well in WELLS:
        gt = truth["wells"][well]["tile_positions"]
        mine = {int(r["site"]): (float(r["y"]), float(r["x"])) for r in pos if r["well"] == well}
        for site, (gy, gx) in gt.items():
            my, mx = mine[int(site)]
            assert abs((my - mine[1][0]) - (gy - gt["1"][0])) <= 2
            assert abs((mx - mine[1][1]) - (gx - gt["1"][1])) <= 2
    plate = list(Reader(parse_url(zarr_url))())[0]
    assert plate.metadata["channel_names"] == ["DAPI", "GFP"]
    field = json.loads(Path(zarr_url, "C", "3", "0", "zarr.json").read_text())
    scale = field["attributes"]["ome"]["multiscales"][0]["datasets"][0]
    assert scale["coordinateTransformations"][0]["scale"][-1] == pytest.approx(
        truth["pixel_size_um"]
    )


def test_channel_taken_at_one_plane_is_absent(tmp_path):
    _plate(str(tmp_path), sites=1, z=3, timepoints=1, channels=2)
    mlf = tmp_path / "MeasurementData.mlf"
    kept = []
    for line in mlf.read_text().splitlines(keepends=True):
        name = line.split(">")[1].split("<")[0] if 'bts:Type="IMG"' in line else ""
        if name.endswith(("Z02C02.tif", "Z03C02.tif")):
            (tmp_path / name).unlink()
            continue
        kept.append(line)
    mlf.write_text("".join(kept))
    layout = open_plate(str(tmp_path))
    absent = {(a.well, a.channel, a.z) for a in layout.absent}
    assert absent == {(w, 2, z) for w in WELLS for z in (2, 3)}
    assert layout.padded == ()
