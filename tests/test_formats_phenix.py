"""Opera Phenix discovery: Harmony index parsing, raster remap of fields, and clear errors."""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import tifffile

from prefect_hcs.formats import PlateError, open_phenix, open_plate, read_plane
from prefect_hcs.formats.phenix import raster_sites
from prefect_hcs.testing.synthetic import make_plate

# Centre-first snake over a 2 x 3 grid: field -> (row, col), row 0 on top.
FIELDS_2x3 = {1: (0, 1), 2: (0, 0), 3: (0, 2), 4: (1, 2), 5: (1, 1), 6: (1, 0)}


def _image_xml(field: int, channel: int, *, row: int = 2, col: int = 3, omit: str = "") -> str:
    r, c = FIELDS_2x3[field]
    parts = {
        "id": f"0{row}0{col}K1F{field}P1R{channel}",
        "URL": f"r0{row}c0{col}f0{field}p01-ch{channel}sk1fk1fl1.tiff",
        "Row": str(row),
        "Col": str(col),
        "FieldID": str(field),
        "PlaneID": "1",
        "TimepointID": "1",
        "ChannelID": str(channel),
    }
    body = "".join(f"<{k}>{v}</{k}>" for k, v in parts.items() if k != omit)
    # 40 px tiles of 0.5 um, 18 um apart (10 % overlap); stage Y grows upwards.
    body += '<ImageResolutionX Unit="m">5E-07</ImageResolutionX>'
    body += f'<PositionX Unit="m">{(c - 1) * 18e-6:.6g}</PositionX>'
    body += f'<PositionY Unit="m">{(0.5 - r) * 18e-6:.6g}</PositionY>'
    return f'<Image Version="1">{body}</Image>'


def _index_xml(images: list[str], ns: str = "http://www.perkinelmer.com/PEHH/HarmonyV5") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<EvaluationInputData Version="1" xmlns="{ns}">\n'
        '<Plates><Plate><PlateID>7</PlateID><Well id="0203"/></Plate></Plates>\n'
        '<Maps><Map><Entry ChannelID="1"><ChannelName>DAPI</ChannelName></Entry>'
        '<Entry ChannelID="2"><ChannelName>Alexa 647</ChannelName></Entry></Map></Maps>\n'
        "<Images>\n" + "\n".join(images) + "\n</Images>\n</EvaluationInputData>\n"
    )


def _tiff(value: int) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.full((40, 40), value, np.uint16))
    return buf.getvalue()


def _write(fs: fsspec.AbstractFileSystem, path: str, data: bytes | str) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def _hand_plate(
    fs: fsspec.AbstractFileSystem,
    root: str,
    *,
    images: list[str] | None = None,
    skip_files: tuple[str, ...] = (),
) -> None:
    """Index.xml in the plate folder (not Images/); each tile is filled with field * 100."""
    if images is None:
        images = [_image_xml(f, c) for f in FIELDS_2x3 for c in (1, 2)]
    _write(fs, f"{root}/Index.xml", _index_xml(images))
    for f in FIELDS_2x3:
        for c in (1, 2):
            name = f"r02c03f0{f}p01-ch{c}sk1fk1fl1.tiff"
            if name not in skip_files:
                _write(fs, f"{root}/{name}", _tiff(f * 100 + c))


@pytest.fixture
def mem_root() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = f"/phenix-{uuid.uuid4().hex[:8]}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_hand_written_index_remaps_fields_to_raster(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    _hand_plate(fs, mem_root)
    layout = open_plate(f"memory://{mem_root}")
    assert layout.format == "phenix"
    assert layout.wells == ("B03",)
    assert layout.grid == (2, 3)
    assert layout.sites == (1, 2, 3, 4, 5, 6)
    assert layout.tile_overlap == pytest.approx(0.1, abs=1e-6)
    assert layout.pixel_size_um == pytest.approx(0.5)
    assert layout.channel_names == {1: "DAPI", 2: "Alexa 647"}
    assert layout.image_shape == (40, 40) and layout.dtype == "uint16"
    assert layout.warnings == ()
    # raster site -> the field that lies there (top row first, left to right)
    expected_field = {1: 2, 2: 1, 3: 3, 4: 6, 5: 5, 6: 4}
    for ref in layout.images:
        assert f"f0{expected_field[ref.site]}p01-ch{ref.channel}" in ref.path
        assert read_plane(fs, ref)[0, 0] == expected_field[ref.site] * 100 + ref.channel


def test_raster_sites_y_up() -> None:
    # 2 x 2, positions in um; larger Y is the top row.
    positions = {1: (0.0, 0.0), 2: (90.0, 0.0), 3: (0.0, 90.0), 4: (90.0, 90.0)}
    mapping, grid, steps = raster_sites(positions, tile_um=100.0)
    assert mapping == {3: 1, 4: 2, 1: 3, 2: 4}
    assert grid == (2, 2) and steps == (90.0, 90.0)


def test_generated_plate_raster_remap_matches_ground_truth(tmp_path: Path) -> None:
    truth = make_plate(
        str(tmp_path / "ph"),
        format="phenix",
        wells=["B02", "B03"],
        sites=9,
        channels=2,
        z=1,
        size=128,
        overlap=0.25,
        seed=5,
    )
    layout = open_plate(str(tmp_path / "ph"))
    assert layout.plate_id == "ph"
    assert layout.wells == ("B02", "B03") and layout.grid == (3, 3)
    assert layout.channel_names == {1: "HOECHST 33342", 2: "Alexa 488"}
    assert layout.pixel_size_um == pytest.approx(truth["pixel_size_um"])
    assert layout.tile_overlap == pytest.approx(0.25, abs=0.01)
    gt = truth["wells"]["B03"]
    positions = {int(s): p for s, p in gt["tile_positions"].items()}
    assert min(positions, key=lambda s: positions[s][0] + positions[s][1]) == 1  # top-left
    assert positions[1][0] < positions[4][0] - 50 and positions[1][1] < positions[2][1] - 50
    assert gt["phenix_field_of_site"]["5"] == 1  # the centre tile was acquired first
    tiles = {
        r.site: read_plane(str(tmp_path / "ph"), r).astype(float)
        for r in layout.images_for_well("B03")
        if r.channel == 1
    }
    assert gt["phenix_field_of_site"]["1"] == 2  # then the snake starts at the top-left
    assert "f02p01" in next(r.path for r in layout.images_for_well("B03") if r.site == 1)
    # Neighbouring sites agree where the ground truth says they overlap -> the remap is right.
    for a, b in ((1, 2), (1, 4), (5, 6), (5, 8)):
        (ya, xa), (yb, xb) = positions[a], positions[b]
        y0, y1 = max(ya, yb), min(ya, yb) + 128
        x0, x1 = max(xa, xb), min(xa, xb) + 128
        pa = tiles[a][y0 - ya : y1 - ya, x0 - xa : x1 - xa]
        pb = tiles[b][y0 - yb : y1 - yb, x0 - xb : x1 - xb]
        assert np.corrcoef(pa.ravel(), pb.ravel())[0, 1] > 0.9, (a, b)


def test_generated_plate_memory_auto_detect(mem_root: str) -> None:
    url = f"memory://{mem_root}"
    truth = make_plate(
        url, format="phenix", wells=["A01", "H12"], sites=4, channels=3, z=2, size=64, timepoints=2
    )
    layout = open_plate(url)
    assert layout.format == "phenix"
    assert (layout.wells, layout.sites, layout.channels) == (
        ("A01", "H12"),
        (1, 2, 3, 4),
        (1, 2, 3),
    )
    assert (layout.z_planes, layout.timepoints, layout.grid) == ((1, 2), (1, 2), (2, 2))
    assert len(layout.images) == 2 * 4 * 3 * 2 * 2
    index = fsspec.filesystem("memory").cat(f"{mem_root}/Images/Index.idx.xml")
    assert b"PEHH/HarmonyV6" in index and b'<ImageResolutionX Unit="m">' in index
    assert json.loads(fsspec.filesystem("memory").cat(f"{mem_root}/ground_truth.json")) == truth


def test_malformed_xml_names_file_and_line(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    _hand_plate(fs, mem_root)
    text = _index_xml([_image_xml(1, 1)]).replace("</Images>", "</Imagez>")
    _write(fs, f"{mem_root}/Index.xml", text)
    with pytest.raises(
        PlateError,
        match=r"malformed Harmony index .*Index\.xml: XML error at line 7, column 2 \(mismatched tag\)",
    ):
        open_plate(f"memory://{mem_root}")


def test_missing_element_names_image_and_element(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    images = [
        _image_xml(f, c, omit="Row" if (f, c) == (4, 2) else "") for f in FIELDS_2x3 for c in (1, 2)
    ]
    _hand_plate(fs, mem_root, images=images)
    with pytest.raises(PlateError, match=r"Index\.xml: <Image> 0203K1F4P1R2 .* lacks <Row>"):
        open_plate(f"memory://{mem_root}")
    bad = [x.replace("<FieldID>3</FieldID>", "<FieldID>three</FieldID>") for x in images[:6]]
    _write(fs, f"{mem_root}/Index.xml", _index_xml(bad))
    with pytest.raises(PlateError, match=r"<FieldID>three</FieldID>, expected an integer"):
        open_plate(f"memory://{mem_root}")


def test_wrong_root_element(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    _write(fs, f"{mem_root}/Images/Index.idx.xml", "<Plate xmlns='urn:x'><Images/></Plate>")
    with pytest.raises(PlateError, match=r"Index\.idx\.xml has root element <Plate>"):
        open_plate(f"memory://{mem_root}")


def test_listed_but_absent_images(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    _hand_plate(fs, mem_root, skip_files=("r02c03f06p01-ch2sk1fk1fl1.tiff",))
    with pytest.raises(PlateError) as err:
        open_plate(f"memory://{mem_root}")
    message = str(err.value)
    # field 6 is the bottom-left tile -> raster site 4
    assert "1 planes missing" in message and "(B03, 4, 2, 1, 1)" in message
    assert "r02c03f06p01-ch2sk1fk1fl1.tiff" in message


def test_missing_z_plane_in_index(tmp_path: Path) -> None:
    make_plate(
        str(tmp_path), format="phenix", wells=["A01", "A02"], sites=1, channels=1, z=3, size=32
    )
    index = tmp_path / "Images" / "Index.idx.xml"
    text = index.read_text()
    start = text.index('<Image Version="1">\n      <id>0101K1F1P2R1')
    index.write_text(text[:start] + text[text.index("</Image>", start) + len("</Image>") :])
    with pytest.raises(PlateError, match=r"\(A01, 1, 1, 2, 1\)"):
        open_plate(str(tmp_path))


def test_unlisted_and_unparseable_tiffs_are_warnings(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    _hand_plate(fs, mem_root)
    _write(fs, f"{mem_root}/r09c09f01p01-ch1sk1fk1fl1.tiff", _tiff(1))
    _write(fs, f"{mem_root}/snapshot.tiff", _tiff(1))
    layout = open_phenix(f"memory://{mem_root}")
    assert len(layout.images) == 12
    assert any("not understood" in w and "snapshot.tiff" in w for w in layout.warnings)
    assert any("not listed in" in w and "r09c09f01" in w for w in layout.warnings)


def test_no_positions_keeps_field_numbers(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    images = [x.split("<PositionX")[0] + "</Image>" for x in (_image_xml(f, 1) for f in FIELDS_2x3)]
    _hand_plate(fs, mem_root, images=images)
    layout = open_plate(f"memory://{mem_root}")
    assert layout.grid is None and layout.tile_overlap is None
    assert any("lack PositionX" in w for w in layout.warnings)
    assert layout.pixel_size_um == 0.5
    assert {r.site: re.search(r"f(\d\d)p", r.path)[1] for r in layout.images} == {
        f: f"{f:02d}" for f in FIELDS_2x3
    }


def test_truncated_tiff(tmp_path: Path) -> None:
    make_plate(str(tmp_path), format="phenix", wells=["A01"], sites=1, channels=1, z=1, size=64)
    layout = open_plate(str(tmp_path))
    path = Path(layout.images[0].path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(PlateError, match=rf"{path.name}.*corrupt or truncated"):
        read_plane(str(tmp_path), layout.images[0])


def test_phenix_format_on_imagexpress_plate(tmp_path: Path) -> None:
    make_plate(
        str(tmp_path), format="imagexpress", wells=["A01"], sites=1, channels=1, z=1, size=32
    )
    with pytest.raises(PlateError, match="not an Opera Phenix/Operetta plate: no Index.idx.xml"):
        open_plate(str(tmp_path), format="phenix")
