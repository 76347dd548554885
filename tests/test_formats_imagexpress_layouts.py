"""MetaXpress acquisition folders and exports as the instruments write them (generated plates).

Every plate here is written by `make_imagexpress_plate` in the real layout (GUID names, _thumb
previews, MetaSeries XML, LZW) and read back; the expected values come from its ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from prefect_hcs.formats import PlateError, open_plate, read_plane
from prefect_hcs.testing.synthetic_imagexpress import (
    MIXED_CHANNELS,
    IxChannel,
    make_imagexpress_plate,
)


def _absent_of(layout) -> set[tuple[int, int, int]]:
    return {(a.channel, a.z, a.timepoint) for a in layout.absent}


def _check_physical(layout, truth) -> None:
    assert layout.pixel_size_um == pytest.approx(truth["pixel_size_um"])
    assert layout.z_spacing_um == pytest.approx(truth["z_step_um"]) if truth["z"] > 1 else True
    if truth["timepoints"] > 1:
        assert layout.time_interval_s == pytest.approx(truth["interval_s"])
    for well, w in truth["wells"].items():
        for site, xy in w["stage_positions_um"].items():
            assert layout.field_position_um(well, int(site)) == pytest.approx(tuple(xy))
    assert layout.objective == "20X Plan Apo Lambda / 0.75 NA"


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory) -> tuple[dict, object]:
    out = tmp_path_factory.mktemp("acq")
    truth = make_imagexpress_plate(
        str(out), variant="acquisition", wells=["B03", "C04"], sites=4,
        channels=MIXED_CHANNELS, z=3, timepoints=2, size=64, seed=5,
    )  # fmt: skip
    return truth, open_plate(truth["plate_path"])


def test_acquisition_folder_layout(acquisition) -> None:
    truth, layout = acquisition
    assert Path(truth["plate_path"]).parts[-2:] == ("2026-11-30", "1075")
    assert not list(Path(truth["plate_path"]).rglob("*.HTD"))
    assert layout.format == "imagexpress" and layout.variant == "MetaXpress acquisition"
    assert layout.wells == ("B03", "C04") and layout.sites == (1, 2, 3, 4)
    assert layout.channels == (1, 2, 4)  # channel 3 (Cy5) was taken only as a projection
    assert layout.z_planes == (1, 2, 3) and layout.timepoints == (1, 2)
    assert layout.grid == (2, 2)  # no HTD: from the stage positions
    assert layout.tile_overlap == pytest.approx(0.1, abs=0.02)
    assert layout.channel_names == {1: "DAPI", 2: "FITC", 3: "Cy5", 4: "TexasRed"}
    assert layout.channel_info[4].emission_nm == 615
    assert layout.plate_barcode == "SynthPlate"
    assert layout.dtype == "uint16" and layout.image_shape == (64, 64)
    _check_physical(layout, truth)
    assert not any("_thumb" in r.path for r in (*layout.images, *layout.projections))
    assert any("only as instrument projections" in w for w in layout.warnings)


def test_acquisition_projections_are_apart_from_the_stack(acquisition) -> None:
    _, layout = acquisition
    assert {(p.channel, p.timepoint) for p in layout.projections} == {
        (1, 1), (1, 2), (3, 1), (3, 2),
    }  # fmt: skip
    assert {p.projection for p in layout.projections} == {"maximum"}
    assert len(layout.projections) == 2 * 4 * 4
    assert all("/ZStep_" not in p.path for p in layout.projections)
    assert all(r.projection is None for r in layout.images)


def test_acquisition_absent_planes_follow_the_journal(acquisition) -> None:
    truth, layout = acquisition
    assert _absent_of(layout) == {tuple(a) for a in truth["absent"]}
    assert len(layout.absent) == len(truth["absent"]) * 2 * 4  # every field
    assert layout.padded == ()
    z_read = [r for r in layout.images if r.z_um is not None]
    assert sorted({r.z_um for r in z_read}) == pytest.approx(
        truth["wells"]["B03"]["z_positions_um"]
    )


def test_acquisition_reads_lzw_pixels(acquisition) -> None:
    _, layout = acquisition
    ref = layout.images[-1]
    with tifffile.TiffFile(ref.path) as tif:
        assert tif.pages.first.compression.name == "LZW" and tif.is_metaseries
    plane = read_plane(layout.url, ref)
    assert plane.shape == (64, 64) and plane.dtype == np.uint16 and plane.max() > 0


@pytest.mark.parametrize("htd", [True, False])
def test_export_with_zstep0_and_padding(tmp_path: Path, htd: bool) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path), variant="export", wells=["A01", "H12"], sites=2, channels=MIXED_CHANNELS,
        z=4, timepoints=2, size=48, htd=htd, z_step_um=1.5,
    )  # fmt: skip
    layout = open_plate(truth["plate_path"])
    assert layout.variant == "MetaXpress export"
    assert layout.wells == ("A01", "H12") and layout.sites == (1, 2)
    assert layout.channels == (1, 2, 3, 4)  # the export padded FITC and Cy5 into every ZStep
    assert layout.z_planes == (1, 2, 3, 4) and layout.grid == (1, 2)
    assert {p.path.split("/")[-2] for p in layout.projections} == {"ZStep_0"}
    assert layout.padded == tuple(sorted(truth["padded"]))
    assert len(layout.padded) == 2 * 2 * 2 * (3 + 4)  # wells x sites x t x (FITC z2-4, Cy5 z1-4)
    assert _absent_of(layout) == {tuple(a) for a in truth["absent"]}  # TexasRed at t=2
    _check_physical(layout, truth)
    assert not any("declares" in w for w in layout.warnings)


def test_single_wavelength_single_site_names(tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path), variant="acquisition", wells=["D07"], sites=1, channels=1, z=1, size=32
    )
    names = [p.name for p in Path(truth["plate_path"]).iterdir()]
    assert any(n.startswith("SynthPlate_D07") and "_w" not in n and "_s" not in n for n in names)
    layout = open_plate(truth["plate_path"])
    assert layout.channels == (1,) and layout.sites == (1,) and layout.grid == (1, 1)
    assert layout.channel_names == {1: "DAPI"} and len(layout.images) == 1


def test_htd_contradicting_the_files_warns_and_the_files_win(tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path), variant="export", wells=["B02"], sites=4, channels=2, z=1, size=48
    )
    htd = tmp_path / "SynthPlate.HTD"
    text = (
        htd.read_text().replace('"XSites", 2', '"XSites", 3').replace('"YSites", 2', '"YSites", 3')
    )
    htd.write_text(text.replace('"WaveName2", "FITC"', '"WaveName2", "GFP"'))
    layout = open_plate(truth["plate_path"])
    assert layout.grid == (2, 2) and layout.channel_names == {1: "DAPI", 2: "FITC"}
    assert any("3x3 site grid" in w and "stage positions' 2x2" in w for w in layout.warnings)
    assert any("'GFP'" in w and "using 'FITC'" in w for w in layout.warnings)


def _set_compression_tag(path: Path, code: int) -> None:
    """Rewrite a TIFF's Compression tag in place (the pixels stay as written)."""
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages.first.tags["Compression"].valueoffset
    data = bytearray(path.read_bytes())
    data[offset : offset + 2] = code.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.tif") if "_thumb" not in p.name)


def test_a_codec_nobody_here_decodes_fails_at_plan_naming_the_file(tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path), variant="export", wells=["A01", "B01"], sites=2, channels=1, z=1, size=48
    )
    for image in _images(tmp_path):
        _set_compression_tag(image, 60001)  # what a plate from an unknown encoder looks like
    first = _images(tmp_path)[0]
    with pytest.raises(PlateError, match=rf"cannot read TIFF {first} .*60001") as err:
        open_plate(truth["plate_path"])
    assert "\n" not in str(err.value)


def test_one_damaged_file_is_a_warning_not_a_plate_failure(tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path), variant="export", wells=["A01", "B01"], sites=2, channels=1, z=1, size=64
    )
    damaged = _images(tmp_path)[0]
    with tifffile.TiffFile(damaged) as tif:
        page = tif.pages.first
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    data = bytearray(damaged.read_bytes())
    data[offset : offset + count] = b"\xff" * count  # header intact, LZW stream garbage
    damaged.write_bytes(bytes(data))
    truncated = _images(tmp_path)[-1]
    truncated.write_bytes(truncated.read_bytes()[:100])
    layout = open_plate(truth["plate_path"])
    assert len(layout.images) == 4
    assert any(f"cannot read TIFF {damaged}" in w for w in layout.warnings)
    assert any(str(truncated) in w and "its well fails" in w for w in layout.warnings)
    with pytest.raises(PlateError, match=str(damaged)):
        read_plane(layout.url, layout.images[0])


def test_broken_metaseries_xml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "P_A01_s1_w1.tif"
    tifffile.imwrite(
        path, np.zeros((8, 8), np.uint16), description="<MetaData><PlaneInfo><prop id=",
        software="MetaSeries", metadata=None,
    )  # fmt: skip
    with pytest.raises(PlateError, match=rf"unreadable MetaSeries XML in {path}"):
        open_plate(str(tmp_path))


def test_date_folder_points_at_the_acquisition(tmp_path: Path) -> None:
    make_imagexpress_plate(
        str(tmp_path), variant="acquisition", wells=["A01"], sites=1, z=1, size=32
    )
    with pytest.raises(PlateError, match=r"2026-11-30.*'<date>/<acquisition id>/'"):
        open_plate(str(tmp_path), format="imagexpress")


@pytest.mark.parametrize(
    ("files", "named"),
    [
        (["MeasurementDetail.mrf", "plate.wpi"], "Yokogawa CellVoyager"),
        (["plate.xdce"], "IN Cell Analyzer"),
        (["analysis.cppipe", "Image.csv"], "CellProfiler"),
        (["zarr.json"], "Zarr v3 store"),
        (["scan.nd2"], "Nikon"),
    ],
)
def test_other_vendors_are_named(tmp_path: Path, files: list[str], named: str) -> None:
    for name in files:
        (tmp_path / name).write_text("x")
    with pytest.raises(PlateError, match=named) as err:
        open_plate(str(tmp_path))
    assert "no plate metadata" not in str(err.value)
    with pytest.raises(PlateError, match=f"not an ImageXpress plate: it holds .*{named}"):
        open_plate(str(tmp_path), format="imagexpress")


def test_ome_zarr_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "plate.ome.zarr").mkdir()
    with pytest.raises(PlateError, match="OME-Zarr store"):
        open_plate(str(tmp_path))


def test_generator_writes_ground_truth_outside_the_plate(tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path), variant="acquisition", wells=["A01"], sites=1, z=2, size=32,
        channels=(IxChannel("DAPI", 452, projection=True),),
    )  # fmt: skip
    assert (
        json.loads((tmp_path / "ground_truth.json").read_text())["plate_path"]
        == truth["plate_path"]
    )
    assert not list(Path(truth["plate_path"]).rglob("ground_truth.json"))


def test_mixed_image_sizes_are_one_clear_error(tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path), variant="export", wells=["A01"], sites=1, channels=2, z=1, size=48
    )
    [w2] = [
        p
        for p in (tmp_path / "TimePoint_1").iterdir()
        if "_w2" in p.name and "_thumb" not in p.name
    ]
    with tifffile.TiffFile(w2) as tif:
        description = tif.pages.first.description
    tifffile.imwrite(
        w2,
        np.zeros((24, 24), np.uint16),
        description=description,
        software="MetaSeries",
        metadata=None,
    )
    with pytest.raises(
        PlateError, match=rf"{w2.name} is a 24x24 uint16 image but .* is 48x48 uint16"
    ):
        open_plate(truth["plate_path"])


def test_plane_symlinked_out_of_the_plate_and_wells_off_the_plate(tmp_path: Path) -> None:
    truth = make_imagexpress_plate(
        str(tmp_path / "p"),
        variant="export",
        wells=["A01", "B01"],
        sites=1,
        channels=1,
        z=1,
        size=32,
    )
    outside = tmp_path / "outside.tif"
    outside.write_bytes(b"secret")
    [victim] = [p for p in _images(tmp_path / "p") if "_B01" in p.name]
    good = victim.read_bytes()
    victim.unlink()
    victim.symlink_to(outside)
    with pytest.raises(PlateError, match="resolves to a file outside the plate folder") as err:
        open_plate(truth["plate_path"])
    assert "secret" not in str(err.value)
    victim.unlink()
    victim.write_bytes(good)
    htd = tmp_path / "p" / "SynthPlate.HTD"
    htd.write_text(htd.read_text().replace('"YWells", 8', '"YWells", 1'))
    with pytest.raises(
        PlateError, match=r"SynthPlate\.HTD: image .* is well A01|outside the plate"
    ):
        open_plate(truth["plate_path"])
