"""ImageXpress discovery: generated plates, hand-written HTD fixtures, and clear errors."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import tifffile

from prefect_hcs.formats import PlateError, open_imagexpress, open_plate, read_plane
from prefect_hcs.formats.imagexpress import parse_filename
from prefect_hcs.testing.synthetic import make_plate

GUID = "07447158-AC76-4844-8431-E6A954BD1174"

HTD_2x2 = """"HTSInfoFile", Version 1.0
"Description", "hand-written fixture"
"TimePoints", 1
"ZSeries", FALSE
"ZSteps", 1
"XWells", 12
"YWells", 8
"Sites", TRUE
"XSites", 2
"YSites", 2
"SiteSelection1", TRUE, TRUE
"SiteSelection2", TRUE, TRUE
"Waves", TRUE
"NWavelengths", {waves}
"WaveName1", "DAPI"
"WaveName2", "FITC"
"WaveName3", "Cy5"
"WaveCollect1", 1
"WaveCollect2", 1
"WaveCollect3", 1
"EndFile"
"""


def _desc(x_um: float, y_um: float, pixel_um: float = 0.5) -> str:
    return (
        "<MetaData>\r\n<PlaneInfo>\r\n"
        f'<prop id="spatial-calibration-x" type="float" value="{pixel_um}"/>\r\n'
        '<prop id="spatial-calibration-units" type="string" value="um"/>\r\n'
        f'<prop id="stage-position-x" type="float" value="{x_um}"/>\r\n'
        f'<prop id="stage-position-y" type="float" value="{y_um}"/>\r\n'
        "</PlaneInfo>\r\n</MetaData>"
    )


def _tiff(array: np.ndarray, description: str | None = None) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, description=description, metadata=None)
    return buf.getvalue()


def _write(fs: fsspec.AbstractFileSystem, path: str, data: bytes | str) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def _hand_plate(
    fs: fsspec.AbstractFileSystem,
    root: str,
    *,
    waves_declared: int = 2,
    channels: int = 2,
    skip: tuple[tuple[str, int, int], ...] = (),
) -> None:
    """2 wells x 2x2 sites (40 px tiles, 36 px step = 10 % overlap) with GUID names and thumbs."""
    _write(fs, f"{root}/MyPlate.HTD", HTD_2x2.format(waves=waves_declared))
    rng = np.random.default_rng(1)
    for well in ("B03", "C10"):
        for site in range(1, 5):
            r, c = divmod(site - 1, 2)
            for ch in range(1, channels + 1):
                if (well, site, ch) in skip:
                    continue
                data = _tiff(
                    rng.integers(0, 4000, (40, 48), dtype=np.uint16),
                    _desc(1000 + c * 48 * 0.9 * 0.5, 2000 + r * 40 * 0.9 * 0.5),
                )
                _write(fs, f"{root}/TimePoint_1/MyPlate_{well}_s{site}_w{ch}{GUID}.tif", data)
                _write(fs, f"{root}/TimePoint_1/MyPlate_{well}_s{site}_w{ch}_thumb{GUID}.tif", b"x")


@pytest.fixture
def mem_root() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = f"/ix-{uuid.uuid4().hex[:8]}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"Week1_150607_B02_s1_w1{GUID}.tif", ("B02", 1, 1, None, None)),
        (f"IXMtest_B15_s8_w4{GUID}.TIF", ("B15", 8, 4, None, None)),
        ("MyPlate_B03_s2_w2_z3.TIF", ("B03", 2, 2, 3, None)),
        ("A01_s1_w1.tif", ("A01", 1, 1, None, None)),
        ("Plate_B3_s12_w12_z2_t5.tiff", ("B03", 12, 12, 2, 5)),
        ("Plate_AF48_w2.tif", ("AF48", None, 2, None, None)),
        ("My_Plate_2_H07_s3.tif", ("H07", 3, None, None, None)),
    ],
)
def test_parse_filename(name: str, expected: tuple) -> None:
    parsed = parse_filename(name)
    assert parsed is not None
    assert (parsed["well"], parsed["site"], parsed["channel"], parsed["z"], parsed["t"]) == expected


@pytest.mark.parametrize("name", ["notes.tif", "B03.png", "plate_overview.tif", "_s1_w1.tif"])
def test_parse_filename_rejects(name: str) -> None:
    assert parse_filename(name) is None


def test_generated_plate_local(tmp_path: Path) -> None:
    truth = make_plate(
        str(tmp_path / "ix"),
        format="imagexpress",
        wells=["A01", "A02", "B01", "B02"],
        sites=4,
        channels=2,
        z=3,
        size=128,
        seed=3,
    )
    layout = open_plate(str(tmp_path / "ix"))
    assert layout.format == "imagexpress"
    assert layout.plate_id == "ix"
    assert layout.wells == ("A01", "A02", "B01", "B02")
    assert layout.sites == (1, 2, 3, 4)
    assert layout.channels == (1, 2)
    assert layout.z_planes == (1, 2, 3)
    assert layout.timepoints == (1,)
    assert layout.grid == (2, 2)
    assert layout.tile_overlap == pytest.approx(0.1, abs=0.01)
    assert layout.channel_names == {1: "DAPI", 2: "FITC"}
    assert layout.pixel_size_um == pytest.approx(truth["pixel_size_um"])
    assert layout.image_shape == (128, 128)
    assert layout.dtype == "uint16"
    assert layout.warnings == ()
    assert len(layout.images) == 4 * 4 * 2 * 3
    ref = layout.images_for_well("B02")[0]
    assert "/TimePoint_1/ZStep_1/SynthPlate_B02_s1_w1" in ref.path
    plane = read_plane(str(tmp_path / "ix"), ref)
    assert plane.shape == (128, 128) and plane.dtype == np.uint16


def test_generated_plate_memory_single_site(mem_root: str) -> None:
    url = f"memory://{mem_root}"
    make_plate(
        url, format="imagexpress", wells=["C05"], sites=1, channels=1, z=1, size=64, timepoints=2
    )
    layout = open_plate(url)
    assert layout.format == "imagexpress"
    assert layout.wells == ("C05",)
    assert layout.sites == (1,) and layout.grid == (1, 1) and layout.tile_overlap is None
    assert layout.timepoints == (1, 2)
    assert layout.images[0].path.startswith(f"{mem_root}/TimePoint_1/SynthPlate_C05_w1")
    assert read_plane(fsspec.filesystem("memory"), layout.images[-1]).shape == (64, 64)


def test_hand_written_fixture_memory(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    _hand_plate(fs, mem_root)
    layout = open_imagexpress(f"memory://{mem_root}")
    assert layout.wells == ("B03", "C10")
    assert layout.grid == (2, 2)
    assert layout.tile_overlap == pytest.approx(0.1, abs=1e-3)
    assert layout.pixel_size_um == 0.5
    assert layout.image_shape == (40, 48)
    assert layout.channel_names == {1: "DAPI", 2: "FITC"}
    assert len(layout.images) == 2 * 4 * 2  # thumbnails skipped
    assert not any("_thumb" in r.path for r in layout.images)
    assert layout.warnings == ()


def test_flat_export_with_z_and_t_suffixes(tmp_path: Path) -> None:
    (tmp_path / "flat.HTD").write_text(
        '"HTSInfoFile", Version 1.0\n"Sites", FALSE\n'
        '"NWavelengths", 1\n"WaveName1", "DAPI"\n"EndFile"\n'
    )
    for z in (1, 2):
        for t in (1, 2, 3):
            data = _tiff(np.zeros((16, 16), np.uint8))
            (tmp_path / f"flat_D04_w1_z{z}_t{t}.tif").write_bytes(data)
    layout = open_plate(str(tmp_path))
    assert layout.z_planes == (1, 2) and layout.timepoints == (1, 2, 3)
    assert layout.sites == (1,) and layout.dtype == "uint8" and layout.pixel_size_um is None
    assert any("1 z-steps" in w for w in layout.warnings)  # HTD says no Z series


def test_htd_declares_more_wavelengths_than_files(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    _hand_plate(fs, mem_root, waves_declared=3, channels=2)
    layout = open_plate(f"memory://{mem_root}")
    assert layout.channels == (1, 2)
    assert layout.channel_names == {1: "DAPI", 2: "FITC"}
    [warning] = layout.warnings
    assert "MyPlate.HTD declares 3 wavelengths but the image files have 2" in warning


def test_missing_channel_is_listed(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    _hand_plate(fs, mem_root, skip=(("C10", 3, 2),))
    with pytest.raises(PlateError) as err:
        open_plate(f"memory://{mem_root}")
    assert "1 planes missing" in str(err.value)
    assert "(C10, 3, 2, 1, 1)" in str(err.value)
    assert "MyPlate.HTD" in str(err.value)


def test_many_missing_planes_are_capped(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    skip = tuple(("B03", s, c) for s in range(1, 5) for c in (1, 2))[:-1]
    skip += tuple(("C10", s, 2) for s in range(1, 5))
    _hand_plate(fs, mem_root, skip=skip)
    with pytest.raises(PlateError, match=r"11 planes missing.*and 1 more"):
        open_plate(f"memory://{mem_root}")


def test_unparseable_file_name_is_a_warning(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    _hand_plate(fs, mem_root)
    _write(fs, f"{mem_root}/TimePoint_1/overview image.tif", b"junk")
    _write(fs, f"{mem_root}/TimePoint_1/notes.txt", b"junk")
    layout = open_plate(f"memory://{mem_root}")
    assert len(layout.images) == 16
    assert any("not understood" in w and "overview image.tif" in w for w in layout.warnings)
    assert any("non-TIFF" in w and "notes.txt" in w for w in layout.warnings)


def test_zstep_folders_and_projection(tmp_path: Path) -> None:
    make_plate(
        str(tmp_path), format="imagexpress", wells=["A01"], sites=2, channels=1, z=2, size=32
    )
    copies = sorted((tmp_path / "TimePoint_1" / "ZStep_1").iterdir())
    for plane in copies:  # beside the ZStep folders: projections (acquisition-folder layout)
        (tmp_path / "TimePoint_1" / plane.name).write_bytes(plane.read_bytes())
    layout = open_plate(str(tmp_path))
    assert layout.z_planes == (1, 2) and layout.grid == (1, 2)
    assert len(layout.images) == 4
    assert [p.path.rsplit("/", 1)[-1] for p in layout.projections] == [c.name for c in copies]
    assert {p.projection for p in layout.projections} == {"unspecified"}
    (tmp_path / "TimePoint_1" / copies[1].name).unlink()
    layout = open_plate(str(tmp_path))
    assert len(layout.images) == 4
    assert any("(projections)" in w and "cannot be read" in w for w in layout.warnings)


def test_malformed_htd_names_file_and_line(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    _hand_plate(fs, mem_root)
    _write(fs, f"{mem_root}/MyPlate.HTD", '"HTSInfoFile", Version 1.0\n"XSites", 2\nYSites = 2\n')
    with pytest.raises(PlateError, match=r"malformed HTD file .*MyPlate\.HTD, line 3"):
        open_plate(f"memory://{mem_root}")
    _write(fs, f"{mem_root}/MyPlate.HTD", '"Sites", TRUE\n"XSites", two\n"YSites", 2\n')
    with pytest.raises(PlateError, match=r"MyPlate\.HTD, line 2: 'XSites' must be an integer"):
        open_plate(f"memory://{mem_root}")


def test_truncated_tiff_names_the_file(tmp_path: Path) -> None:
    make_plate(
        str(tmp_path), format="imagexpress", wells=["A01"], sites=1, channels=1, z=1, size=64
    )
    layout = open_plate(str(tmp_path))
    path = Path(layout.images[0].path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(PlateError, match=rf"cannot read TIFF {path}.*corrupt or truncated"):
        read_plane(str(tmp_path), layout.images[0])
    path.write_bytes(b"II*\x00garbage")
    with pytest.raises(PlateError, match=str(path)):
        open_plate(str(tmp_path))


def test_no_metadata_file(tmp_path: Path, mem_root: str) -> None:
    (tmp_path / "notes.txt").write_text("not a plate")
    with pytest.raises(PlateError, match=r"no plate metadata in .*\.HTD.*Index\.idx\.xml"):
        open_plate(str(tmp_path))
    with pytest.raises(PlateError, match=r"no MetaXpress images in .*_w<channel><GUID>\.tif"):
        open_plate(str(tmp_path), format="imagexpress")
    with pytest.raises(PlateError, match="plate folder not found"):
        open_plate(f"memory://{mem_root}/nope")
    with pytest.raises(PlateError, match="unknown plate format"):
        open_plate(str(tmp_path), format="cv8000")


def test_loose_metaxpress_tiff_without_htd_is_an_acquisition(tmp_path: Path) -> None:
    (tmp_path / "A01_s1_w1.tif").write_bytes(_tiff(np.zeros((4, 4), np.uint16)))
    layout = open_plate(str(tmp_path))
    assert layout.format == "imagexpress" and layout.variant == "MetaXpress acquisition"
    assert layout.wells == ("A01",) and layout.pixel_size_um is None
