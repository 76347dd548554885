"""Harmony V5 (Index.idx.xml) and V7 (Index.xml) exports with LZW TIFFs: layout, plan and run.

Plates come from `synthetic_harmony`, which writes the instruments' real layout: ``Images/`` with
``r01c01f01p01-ch1sk1fk1fl1.tiff`` LZW files, the namespaced index, fields numbered centre-first,
PositionX/Y/Z in metres (Y up), TimepointID from 0, AbsTime, PlateID, and, in V7, the channel
settings (pixel size included) only under ``<Maps><Entry>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

from prefect_hcs.formats import PlateError, open_plate, read_plane
from prefect_hcs.testing.synthetic_harmony import make_harmony_plate

WELLS = ["B02", "C03"]


def _plate(tmp_path: Path, variant: str, **kw) -> tuple[Path, dict]:
    root = tmp_path / f"Harmony_{variant}"
    options = dict(wells=WELLS, sites=4, channels=2, z=3, timepoints=2, size=64, seed=3)
    truth = make_harmony_plate(str(root), variant=variant, **{**options, **kw})
    return root, truth


@pytest.mark.parametrize(
    ("variant", "instrument", "index_name"),
    [("v5", "Phenix", "Index.idx.xml"), ("v7", "Operetta CLS", "Index.xml")],
)
def test_layout_reads_every_field_of_the_index(tmp_path, variant, instrument, index_name):
    root, truth = _plate(tmp_path, variant, instrument=instrument, z_step_um=1.5)
    assert (root / "Images" / index_name).is_file()
    layout = open_plate(str(root))
    assert layout.format == "phenix"
    assert layout.variant == f"Harmony {variant.upper()} ({instrument})"
    assert layout.plate_barcode == truth["barcode"]
    assert (layout.wells, layout.sites, layout.channels) == (tuple(WELLS), (1, 2, 3, 4), (1, 2))
    assert (layout.z_planes, layout.timepoints) == ((1, 2, 3), (1, 2))  # TimepointID 0 -> 1
    assert layout.pixel_size_um == pytest.approx(truth["pixel_size_um"])
    assert layout.z_spacing_um == pytest.approx(1.5)
    assert layout.time_interval_s == pytest.approx(600.0)
    assert layout.objective == ("20x / 1 NA" if instrument == "Phenix" else "40x / 1.1 NA")
    assert layout.channel_names == {1: "HOECHST 33342", 2: "Alexa 488"}
    assert layout.channel_info[1].excitation_nm == 375 and layout.channel_info[2].emission_nm == 525
    assert layout.grid == (2, 2) and layout.warnings == ()
    # raster site 1 is the top-left field: smallest X, largest Y (Harmony's Y grows upwards)
    x1, y1 = layout.field_position_um("C03", 1)
    x4, y4 = layout.field_position_um("C03", 4)
    step = truth["step_px"] * truth["pixel_size_um"]
    assert x4 - x1 == pytest.approx(step, abs=0.01) and y1 - y4 == pytest.approx(step, abs=0.01)
    plane = layout.images_for_well("B02")[0]
    assert plane.acquired_at is not None and plane.acquired_at.utcoffset() is not None
    assert sorted({round(r.z_um, 6) for r in layout.images_for_well("B02")}) == [-1.5, 0.0, 1.5]


def test_lzw_planes_read(tmp_path):
    root, _ = _plate(tmp_path, "v7")
    layout = open_plate(str(root))
    ref = layout.images[0]
    with tifffile.TiffFile(ref.path) as tif:
        assert tif.pages.first.compression == tifffile.COMPRESSION.LZW
    pixels = read_plane(str(root), ref)
    assert pixels.shape == (64, 64) and pixels.dtype.name == "uint16" and pixels.max() > 0


def test_v7_without_pixel_size_warns(tmp_path):
    root, _ = _plate(tmp_path, "v7")
    index = root / "Images" / "Index.xml"
    text = index.read_text(encoding="utf-8-sig")
    for tag in ("ImageResolutionX", "ImageResolutionY"):
        while f"<{tag}" in text:
            start = text.index(f"<{tag}")
            text = text[:start] + text[text.index(f"</{tag}>", start) + len(tag) + 3 :]
    index.write_text(text, encoding="utf-8")
    layout = open_plate(str(root))
    assert layout.pixel_size_um is None
    assert any("no pixel size" in w and "Index.xml" in w for w in layout.warnings)


def test_plan_reports_the_harmony_layout(tmp_path):
    root, truth = _plate(tmp_path, "v7", z=1, timepoints=1)
    exe = Path(sys.executable).with_name("prefect-hcs")
    out = subprocess.run(
        [str(exe), "plan", str(root), "--json"], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["wells"] == WELLS and data["plate_format"] == "phenix"
    assert {p["well"] for p in data["step_plans"]} == set(WELLS)


@pytest.mark.server
@pytest.mark.parametrize("variant", ["v5", "v7"])
def test_harmony_plate_runs_end_to_end(prefect_server, tmp_path, variant):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from prefect_hcs.formats.validate_zarr import validate_plate
    from prefect_hcs.runtime import io as hio
    from prefect_hcs.runtime.flow import process_plate

    root, truth = _plate(tmp_path, variant, size=256, timepoints=1)
    state = process_plate(plate=str(root), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    zarr_url = summary["output"]
    assert validate_plate(zarr_url) == []
    rows = hio.csv_to_rows(hio.read_bytes(summary["tables"]["count.measurements"]))
    counts = {r["well"]: int(r["nuclei_count"]) for r in rows}
    assert set(counts) == set(WELLS)
    for well in WELLS:
        true = truth["wells"][well]["nuclei"]
        assert abs(counts[well] - true) <= 0.15 * true, (well, counts[well], true)
    nodes = list(Reader(parse_url(zarr_url))())
    plate = nodes[0]
    assert plate.metadata["channel_names"] == ["HOECHST 33342", "Alexa 488"]
    attrs = json.loads(Path(zarr_url, "zarr.json").read_text())["attributes"]["ome"]["plate"]
    assert sorted(w["path"] for w in attrs["wells"]) == ["B/2", "C/3"]
    field = json.loads(Path(zarr_url, "B", "2", "0", "zarr.json").read_text())
    multiscale = field["attributes"]["ome"]["multiscales"][0]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[-2:] == pytest.approx([truth["pixel_size_um"]] * 2)
    assert {a["name"]: a.get("unit") for a in multiscale["axes"]}["x"] == "micrometer"
    assert os.path.isdir(zarr_url)


def _drop_images(index: Path, keep) -> list[str]:
    """Remove the <Image> entries (and their files) for which keep(url) is False; their URLs."""
    text = index.read_text(encoding="utf-8-sig")
    dropped, out, pos = [], [], 0
    while (start := text.find('<Image Version="1">', pos)) != -1:
        end = text.index("</Image>", start) + len("</Image>")
        url = text[text.index("<URL>", start) + 5 : text.index("</URL>", start)]
        out.append(text[pos:start])
        if keep(url):
            out.append(text[start:end])
        else:
            dropped.append(url)
            (index.parent / url).unlink()
        pos = end
    index.write_text("".join(out) + text[pos:], encoding="utf-8")
    return dropped


def test_channel_taken_at_one_plane_is_absent_not_missing(tmp_path):
    root, _ = _plate(tmp_path, "v5", timepoints=1)
    index = root / "Images" / "Index.idx.xml"
    dropped = _drop_images(index, lambda url: not ("-ch2" in url and "p01-" not in url))
    assert len(dropped) == 2 * 4 * 2  # wells x sites x planes 2..3 of channel 2
    layout = open_plate(str(root))
    assert layout.z_planes == (1, 2, 3) and layout.channels == (1, 2)
    absent = {(a.well, a.site, a.channel, a.z, a.timepoint) for a in layout.absent}
    assert absent == {(w, s, 2, z, 1) for w in WELLS for s in range(1, 5) for z in (2, 3)}


def test_plane_missing_in_one_well_only_is_a_compile_error(tmp_path):
    root, _ = _plate(tmp_path, "v7", timepoints=1)
    index = root / "Images" / "Index.xml"
    _drop_images(index, lambda url: url != "r03c03f01p02-ch2sk1fk1fl1.tiff")
    with pytest.raises(PlateError, match=r"1 planes missing .*\(C03, 1, 2, 2, 1\)"):
        open_plate(str(root))


def test_padding_copies_are_reported(tmp_path):
    root, _ = _plate(tmp_path, "v5", timepoints=1)
    images = root / "Images"
    copy = images / "r02c02f01p03-ch1sk1fk1fl1.tiff"
    copy.write_bytes((images / "r02c02f01p02-ch1sk1fk1fl1.tiff").read_bytes())
    layout = open_plate(str(root))
    assert layout.padded == (str(copy),)
