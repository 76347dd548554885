"""OME-Zarr HCS plate writer (NGFF 0.5 / Zarr v3) and the four-way plate validator."""

from __future__ import annotations

import json
import pickle
import shutil
import threading
import uuid
import zlib
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr

from prefect_hcs.formats import omezarr, omezarr_writer
from prefect_hcs.formats.omezarr import (
    IncompleteOutputError,
    OmeZarrPlateWriter,
    OutputExistsError,
    downsample2,
    parse_well,
    read_plate_attrs,
    read_well_image,
)
from prefect_hcs.formats.validate_zarr import validate_plate, validate_plate_report

WELLS = ["A01", "A03", "B03"]
CHANNELS = ["DAPI", "GFP"]
SHAPE = (1, 2, 1, 300, 500)


def field_data(well: str, field: int) -> np.ndarray:
    """Deterministic, distinct pixels per well/field so mix-ups show."""
    rng = np.random.default_rng(zlib.crc32(f"{parse_well(well).path}/{field}".encode()))
    return rng.integers(0, 60000, SHAPE, dtype=np.uint16)


def init(writer: OmeZarrPlateWriter, fingerprint: str = "fp-1", **kw) -> None:
    args = {
        "plate_name": "plate-1",
        "wells": WELLS,
        "fields_per_well": 2,
        "channel_names": CHANNELS,
        "pixel_size_um": 0.65,
        "source_fingerprint": fingerprint,
    }
    writer.initialize(**{**args, **kw})


def write_all(writer: OmeZarrPlateWriter, wells=WELLS, fields=(0, 1)) -> None:
    for well in wells:
        for f in fields:
            writer.write_field(
                well, f, field_data(well, f), channel_names=CHANNELS, pixel_size_um=0.65
            )


@pytest.fixture
def plate(tmp_path: Path) -> Path:
    url = tmp_path / "plate.zarr"
    writer = OmeZarrPlateWriter(str(url))
    init(writer)
    write_all(writer)
    writer.finalize(summary={"wells": 3})
    return url


def edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_written_plate_is_valid_and_laid_out(plate: Path) -> None:
    assert validate_plate(str(plate)) == []
    attrs = read_plate_attrs(str(plate))
    ome = attrs["ome"]
    assert ome["version"] == "0.5"
    p = ome["plate"]
    assert [r["name"] for r in p["rows"]] == ["A", "B"]
    assert [c["name"] for c in p["columns"]] == ["1", "2", "3"]
    assert p["wells"] == [
        {"path": "A/1", "rowIndex": 0, "columnIndex": 0},
        {"path": "A/3", "rowIndex": 0, "columnIndex": 2},
        {"path": "B/3", "rowIndex": 1, "columnIndex": 2},
    ]
    assert p["field_count"] == 2 and p["name"] == "plate-1"
    assert p["acquisitions"][0]["id"] == 0
    assert attrs["prefect_hcs"]["status"] == "complete"
    assert attrs["prefect_hcs"]["summary"] == {"wells": 3}
    well = json.loads((plate / "B/3/zarr.json").read_text())["attributes"]["ome"]["well"]
    assert [im["path"] for im in well["images"]] == ["0", "1"]

    field = zarr.open_group(str(plate / "B/3/0"), mode="r")
    ms = field.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["t", "c", "z", "y", "x"]
    assert ms["axes"][4]["unit"] == "micrometer"
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"][3:] == [1.3, 1.3]
    level0 = field[ms["datasets"][0]["path"]]
    assert level0.metadata.dimension_names == ("t", "c", "z", "y", "x")
    assert level0.chunks == (1, 1, 1, 300, 500)
    assert [field[d["path"]].shape[-2:] for d in ms["datasets"]] == [(300, 500), (150, 250)]
    omero = field.attrs["ome"]["omero"]
    assert [c["label"] for c in omero["channels"]] == CHANNELS
    data = field_data("B03", 0)
    assert omero["channels"][1]["window"]["end"] == float(data[:, 1].max())


def test_round_trip_pixels_and_downsample(plate: Path) -> None:
    for well in WELLS:
        for f in (0, 1):
            expected = field_data(well, f)
            np.testing.assert_array_equal(read_well_image(str(plate), well, f), expected)
    data = field_data("A03", 1)
    level1 = read_well_image(str(plate), "A/3", 1, level=1)
    mean = data.reshape(1, 2, 1, 150, 2, 250, 2).astype(np.float64).mean(axis=(4, 6))
    np.testing.assert_array_equal(level1, np.rint(mean).astype(np.uint16))
    assert level1.dtype == np.uint16


def test_downsample_odd_sizes_repeat_the_edge() -> None:
    a = np.arange(15, dtype=np.uint8).reshape(1, 1, 1, 3, 5)
    out = downsample2(a)
    assert out.shape == (1, 1, 1, 2, 3) and out.dtype == np.uint8
    assert out[0, 0, 0, 1, 2] == a[0, 0, 0, 2, 4]  # corner block is the pixel itself
    assert omezarr.pyramid_shapes((1, 1, 1, 2048, 1000)) == [
        (1, 1, 1, 2048, 1000),
        (1, 1, 1, 1024, 500),
        (1, 1, 1, 512, 250),
    ]
    assert len(omezarr.pyramid_shapes((1, 1, 1, 300, 500), n_levels=4)) == 4


def test_ome_zarr_reader_finds_plate_and_wells(plate: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Plate, Reader, Well

    nodes = list(Reader(parse_url(str(plate)))())
    plate_node = next(n for n in nodes if n.load(Plate) is not None)
    wells = plate_node.metadata["metadata"]["plate"]["wells"]
    assert [w["path"] for w in wells] == ["A/1", "A/3", "B/3"]
    for w in wells:
        well_nodes = list(Reader(parse_url(str(plate / w["path"])))())
        assert any(n.load(Well) is not None for n in well_nodes)


def test_validator_catches_deleted_field(plate: Path) -> None:
    shutil.rmtree(plate / "B/3/1")
    problems = validate_plate(str(plate))
    assert any(p.startswith("prefect-hcs:") and "B/3/1" in p for p in problems), problems
    assert any(p.startswith("yaozarrs:") for p in problems), problems


def test_validator_catches_row_index_inconsistent_with_path(plate: Path) -> None:
    def edit(doc: dict) -> None:
        doc["attributes"]["ome"]["plate"]["wells"][2]["rowIndex"] = 0  # B/3 claims row A

    edit_json(plate / "zarr.json", edit)
    problems = validate_plate(str(plate))
    assert any("B/3" in p and "rowIndex" in p for p in problems), problems


def test_validator_catches_field_count_too_small(plate: Path) -> None:
    def edit(doc: dict) -> None:
        doc["attributes"]["ome"]["plate"]["field_count"] = 1

    edit_json(plate / "zarr.json", edit)
    problems = validate_plate(str(plate))
    assert any("field_count is 1" in p for p in problems), problems


def test_initialize_is_idempotent_with_same_fingerprint(plate: Path) -> None:
    before = (plate / "zarr.json").read_bytes()
    writer = OmeZarrPlateWriter(str(plate))
    init(writer)  # same fingerprint: reuse, touch nothing
    assert (plate / "zarr.json").read_bytes() == before
    assert writer.field_complete("B03", 1)
    np.testing.assert_array_equal(read_well_image(str(plate), "B03", 1), field_data("B03", 1))


def test_different_fingerprint_refused_with_explanation(plate: Path) -> None:
    writer = OmeZarrPlateWriter(str(plate))
    with pytest.raises(OutputExistsError) as exc:
        init(writer, fingerprint="fp-2", plate_name="plate-2")
    msg = str(exc.value)
    assert str(plate) in msg and "plate-1" in msg and "plate-2" in msg
    assert "overwrite=True" in msg and "--overwrite" in msg
    assert writer.field_complete("A01", 0)  # nothing deleted


@pytest.mark.parametrize("overwrite", [False, True])
def test_foreign_folder_is_never_touched(tmp_path: Path, overwrite: bool) -> None:
    folder = tmp_path / "user-data"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="not a zarr group|no zarr group"):
        init(OmeZarrPlateWriter(str(folder)), overwrite=overwrite)
    assert (folder / "notes.txt").read_text() == "precious"

    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w", zarr_format=3, attributes={"owner": "someone"})
    with pytest.raises(OutputExistsError, match="not written by prefect-hcs"):
        init(OmeZarrPlateWriter(str(other)), overwrite=overwrite)
    assert zarr.open_group(str(other), mode="r").attrs["owner"] == "someone"


def test_empty_existing_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "out.zarr").mkdir()
    writer = OmeZarrPlateWriter(str(tmp_path / "out.zarr"))
    init(writer)
    assert read_plate_attrs(writer.url)["prefect_hcs"]["status"] == "initialized"


def test_overwrite_replaces_our_own_plate(plate: Path) -> None:
    writer = OmeZarrPlateWriter(str(plate))
    init(writer, fingerprint="fp-2", plate_name="plate-2", wells=["C05"], overwrite=True)
    attrs = read_plate_attrs(str(plate))
    assert attrs["prefect_hcs"]["source_fingerprint"] == "fp-2"
    assert attrs["ome"]["plate"]["name"] == "plate-2"
    assert not (plate / "A").exists()
    assert not writer.field_complete("C05", 0)


def test_same_fingerprint_different_layout_refused(plate: Path) -> None:
    with pytest.raises(OutputExistsError, match="different layout"):
        init(OmeZarrPlateWriter(str(plate)), fields_per_well=3)


def test_finalize_names_missing_well(tmp_path: Path) -> None:
    url = str(tmp_path / "p.zarr")
    writer = OmeZarrPlateWriter(url)
    init(writer)
    write_all(writer, wells=["A01", "B03"])
    write_all(writer, wells=["A03"], fields=(0,))
    with pytest.raises(IncompleteOutputError, match="well A3 field 1") as exc:
        writer.finalize()
    assert exc.value.missing == [("A/3", 1)]
    report = validate_plate_report(url)
    assert any("A/3/1" in p for p in report.problems)
    assert any("incomplete" in w for w in report.warnings)
    # the retry writes the missing field and finalize succeeds
    write_all(writer, wells=["A03"], fields=(1,))
    writer.finalize()
    assert read_plate_attrs(url)["prefect_hcs"]["status"] == "complete"
    assert validate_plate(url) == []


def test_half_written_field_counts_as_missing(tmp_path: Path, monkeypatch) -> None:
    url = str(tmp_path / "p.zarr")
    writer = OmeZarrPlateWriter(url)
    init(writer)
    write_all(writer)

    def crash(*a, **k):
        raise KeyboardInterrupt("worker killed after the arrays, before the metadata")

    monkeypatch.setattr(omezarr_writer, "image_metadata", crash)
    with pytest.raises(KeyboardInterrupt):
        writer.write_field(
            "B03", 0, field_data("B03", 0), channel_names=CHANNELS, pixel_size_um=0.65
        )
    monkeypatch.undo()
    assert (tmp_path / "p.zarr/B/3/0/0/zarr.json").exists()  # arrays are there...
    assert not writer.field_complete("B03", 0)  # ...but without metadata the field is missing
    with pytest.raises(FileNotFoundError, match="no multiscales"):
        read_well_image(url, "B03", 0)
    with pytest.raises(IncompleteOutputError, match="well B3 field 0"):
        writer.finalize()


def test_field_complete_with_chunk_check(plate: Path) -> None:
    writer = OmeZarrPlateWriter(str(plate))
    assert writer.field_complete("A01", 0, check_chunks=True)
    next(_chunk_files(plate / "A/1/0/0")).unlink()
    assert writer.field_complete("A01", 0)  # metadata and shapes still fine
    assert not writer.field_complete("A01", 0, check_chunks=True)


def _chunk_files(array_dir: Path):
    return (p for p in sorted((array_dir / "c").rglob("*")) if p.is_file())


def test_concurrent_write_field_from_threads(tmp_path: Path) -> None:
    url = str(tmp_path / "p.zarr")
    wells = ["A01", "A02", "B01", "B02"]
    writer = OmeZarrPlateWriter(url)
    init(writer, wells=wells, fields_per_well=1)
    errors: list[BaseException] = []

    def work(well: str) -> None:
        try:
            OmeZarrPlateWriter(url).write_field(
                well, 0, field_data(well, 0), channel_names=CHANNELS, pixel_size_um=None
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    shared = [threading.Thread(target=work, args=(w,)) for w in wells]
    for t in shared:
        t.start()
    for t in shared:
        t.join()
    assert not errors
    writer.finalize()
    assert validate_plate(url) == []
    for well in wells:
        np.testing.assert_array_equal(read_well_image(url, well), field_data(well, 0))


def test_memory_url_full_cycle() -> None:
    url = f"memory://hcs-{uuid.uuid4().hex}/plate.zarr"
    try:
        writer = pickle.loads(pickle.dumps(OmeZarrPlateWriter(url)))
        init(writer)
        write_all(writer)
        writer.finalize()
        assert writer.field_complete("B03", 1, check_chunks=True)
        assert validate_plate(url) == []
        np.testing.assert_array_equal(read_well_image(url, "A03", 1), field_data("A03", 1))
        init(OmeZarrPlateWriter(url))  # idempotent through fsspec too
        with pytest.raises(OutputExistsError):
            init(OmeZarrPlateWriter(url), fingerprint="other")
        fs = fsspec.filesystem("memory")
        fs.rm(url.removeprefix("memory://") + "/B/3/1", recursive=True)
        assert any("B/3/1" in p for p in validate_plate(url))
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://").split("/")[0], recursive=True)


@pytest.mark.parametrize(
    ("name", "path"),
    [("B03", "B/3"), ("b3", "B/3"), ("B/3", "B/3"), ("B/03", "B/3"), ("AA12", "AA/12")],
)
def test_parse_well(name: str, path: str) -> None:
    assert parse_well(name).path == path


def test_bad_inputs_rejected(tmp_path: Path) -> None:
    writer = OmeZarrPlateWriter(str(tmp_path / "p.zarr"))
    init(writer)
    with pytest.raises(ValueError, match="5-D"):
        writer.write_field("A01", 0, np.zeros((3, 4)), channel_names=[], pixel_size_um=None)
    with pytest.raises(ValueError, match="channel names"):
        writer.write_field("A01", 0, np.zeros(SHAPE), channel_names=["x"], pixel_size_um=None)
    with pytest.raises(ValueError, match="not a well"):
        parse_well("well-1")
    with pytest.raises(ValueError, match="not declared"):
        writer.write_field("C01", 0, np.zeros(SHAPE), channel_names=CHANNELS, pixel_size_um=None)
    with pytest.raises(ValueError, match="outside 0..1"):
        writer.write_field("A01", 2, np.zeros(SHAPE), channel_names=CHANNELS, pixel_size_um=None)
    with pytest.raises(RuntimeError, match="not initialized"):
        OmeZarrPlateWriter(str(tmp_path / "nothing.zarr")).write_field(
            "A01", 0, np.zeros(SHAPE), channel_names=CHANNELS, pixel_size_um=None
        )


# ------------------------------------------------------------- a plate that does not start at A01
def test_plate_b02_to_g11_indices_agree_with_ome_zarr_py(tmp_path: Path) -> None:
    """Wells B02–G11 (60 wells, none in row A or column 1): every validator passes, and
    ome-zarr-py's reader puts each well's pixels at the row and column its name says."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Plate, Reader

    from prefect_hcs.formats.wells import WellId

    wells = [WellId(r, c) for r in range(1, 7) for c in range(1, 11)]  # B..G x 02..11
    assert (wells[0].name, wells[-1].name, len(wells)) == ("B02", "G11", 60)
    url = str(tmp_path / "b02-g11.zarr")
    writer = OmeZarrPlateWriter(url)
    writer.initialize(
        plate_name="b02-g11",
        wells=[w.name for w in wells],
        fields_per_well=1,
        channel_names=["DAPI"],
        pixel_size_um=0.5,
        source_fingerprint="fp-b02",
    )
    tile = (1, 1, 1, 8, 8)
    value = {w: 10 * w.row_index + w.column_index + 1 for w in wells}  # unique per well
    for w in wells:
        data = np.full(tile, value[w], dtype=np.uint16)
        writer.write_field(w.name, 0, data, channel_names=["DAPI"], pixel_size_um=0.5)
    writer.finalize()

    report = validate_plate_report(url)
    assert report.problems == [], report.problems

    nodes = list(Reader(parse_url(url, mode="r"))())
    plate_node = next(n for n in nodes if n.load(Plate) is not None)
    spec = plate_node.load(Plate)
    meta = plate_node.metadata["metadata"]["plate"]
    assert spec.row_names == ["B", "C", "D", "E", "F", "G"]
    assert spec.col_names == [str(c) for c in range(2, 12)]
    assert len(meta["wells"]) == 60
    for entry in meta["wells"]:
        row, col = spec.row_names[entry["rowIndex"]], spec.col_names[entry["columnIndex"]]
        assert entry["path"] == f"{row}/{col}", entry
        well = WellId.parse(entry["path"])
        assert well in value, entry
        assert (entry["rowIndex"], entry["columnIndex"]) == (
            well.row_index - 1,  # rows start at B
            well.column_index - 1,  # columns start at 2
        ), entry
    grid = np.asarray(plate_node.data[0])  # the reader's stitched plate at full resolution
    assert grid.shape[-2:] == (6 * 8, 10 * 8)
    for w in wells:
        y, x = (w.row_index - 1) * 8, (w.column_index - 1) * 8
        assert np.all(grid[..., y : y + 8, x : x + 8] == value[w]), w.name


def test_plate_metadata_is_written_by_ome_zarr_py(tmp_path: Path, monkeypatch) -> None:
    """The writer goes through ome-zarr-py's plate/well writers (which check rows, columns and
    indices), not through hand-written dicts."""
    from prefect_hcs.formats import omezarr_writer

    calls: list[str] = []
    for name in ("write_plate_metadata", "write_well_metadata"):
        real = getattr(omezarr_writer, name)
        monkeypatch.setattr(
            omezarr_writer, name, lambda *a, _r=real, _n=name, **k: (calls.append(_n), _r(*a, **k))
        )
    init(OmeZarrPlateWriter(str(tmp_path / "p.zarr")))
    assert calls.count("write_well_metadata") == len(WELLS)
    assert calls.count("write_plate_metadata") == 1
