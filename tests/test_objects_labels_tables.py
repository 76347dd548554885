"""Per-object measurements against known answers; NGFF labels and Parquet tables in the plate."""

from __future__ import annotations

import numpy as np
import pytest

from prefect_hcs.formats.labels import read_labels, write_labels
from prefect_hcs.formats.omezarr import OmeZarrPlateWriter
from prefect_hcs.formats.tables import merge_well_tables, read_table, table_url, write_table
from prefect_hcs.processing import get_function, validate_kwargs
from prefect_hcs.processing.measure import measure_labels

#: (centre y, centre x, radius, intensity in channel 1, intensity in channel 2)
OBJECTS = [(30, 30, 8, 1000, 200), (30, 90, 12, 2000, 400), (90, 60, 5, 3000, 600)]


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _scene(shape=(128, 128)):
    labels = np.zeros(shape, np.int32)
    ch = np.full((2, *shape), 100.0)
    for i, (cy, cx, r, a, b) in enumerate(OBJECTS, 1):
        m = _disc(shape, cy, cx, r)
        labels[m] = i
        ch[0][m], ch[1][m] = a, b
    return labels, ch


def test_measure_labels_matches_known_objects():
    labels, ch = _scene()
    rows = {r["label"]: r for r in measure_labels(labels, ch)}
    assert sorted(rows) == [1, 2, 3]
    for i, (cy, cx, r, a, b) in enumerate(OBJECTS, 1):
        row, mask = rows[i], _disc(labels.shape, cy, cx, r)
        assert row["area"] == mask.sum()  # exact pixel count
        assert abs(row["area"] - np.pi * r * r) / (np.pi * r * r) < 0.1
        assert row["centroid_y"] == pytest.approx(cy) and row["centroid_x"] == pytest.approx(cx)
        assert (row["bbox_min_y"], row["bbox_min_x"]) == (cy - r, cx - r)
        assert (row["bbox_max_y"], row["bbox_max_x"]) == (cy + r + 1, cx + r + 1)
        assert row["equivalent_diameter"] == pytest.approx(2 * np.sqrt(mask.sum() / np.pi))
        assert row["eccentricity"] < 0.2 and row["solidity"] > 0.9
        assert row["intensity_mean_c1"] == a and row["intensity_mean_c2"] == b
        assert row["intensity_min_c1"] == a and row["intensity_max_c2"] == b
        assert row["intensity_sum_c1"] == pytest.approx(a * mask.sum())


def test_measure_objects_segments_and_measures_each_channel():
    labels, ch = _scene()
    spec = get_function("measure_objects")
    assert spec.variable_components == ("channel",) and spec.special_outputs == ("objects",)
    out, tables = spec.func(ch, background_radius=None, min_area=10, threshold=500.0, sigma=0.0)
    np.testing.assert_array_equal(out, ch)
    rows = sorted(tables["objects"], key=lambda r: r["centroid_x"] + 1000 * r["centroid_y"])
    assert len(rows) == 3
    for row, (cy, cx, r, a, b) in zip(rows, sorted(OBJECTS), strict=True):
        true_area = _disc(labels.shape, cy, cx, r).sum()
        assert row["area"] == true_area
        assert row["intensity_mean_c1"] == a and row["intensity_mean_c2"] == b
    with pytest.raises(Exception, match="label_channel: must be >= 1"):
        validate_kwargs("measure_objects", {"label_channel": 0})


def _writer(tmp_path) -> tuple[OmeZarrPlateWriter, str]:
    url = str(tmp_path / "P.ome.zarr")
    w = OmeZarrPlateWriter(url)
    w.initialize(
        plate_name="P",
        wells=["A01", "B02"],
        fields_per_well=1,
        channel_names=["a", "b"],
        pixel_size_um=0.5,
        source_fingerprint="test",
    )
    return w, url


def test_labels_are_ngff_labels_found_by_ome_zarr_reader(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    w, url = _writer(tmp_path)
    labels, ch = _scene((300, 300))
    w.write_field(
        "A01", 0, ch[None, :, None].astype(np.uint16), channel_names=["a", "b"], pixel_size_um=0.5
    )
    label_url = write_labels(w, "A01", 0, "nuclei", labels)
    assert label_url.endswith("A/1/0/labels/nuclei")
    np.testing.assert_array_equal(read_labels(url, "A01", 0, "nuclei")[0, 0, 0], labels)
    low = read_labels(url, "A01", 0, "nuclei", level=1)[0, 0, 0]
    np.testing.assert_array_equal(low, labels[::2, ::2])  # nearest neighbour, no new values
    nodes = list(Reader(parse_url(f"{url}/A/1/0"))())
    found = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert found, [n.specs for n in nodes]
    assert found[0].data[0].shape[-2:] == (300, 300)
    with pytest.raises(ValueError, match="must be integers"):
        write_labels(w, "A01", 0, "bad", labels.astype(float))


def test_tables_per_well_and_plate_read_back_in_one_call(tmp_path):
    import pandas as pd

    w, url = _writer(tmp_path)
    labels, ch = _scene()
    rows = measure_labels(labels, ch)
    write_table(table_url(url, "objects", "A01"), [{"well": "A01", **r} for r in rows])
    write_table(table_url(url, "objects", "B02"), [{"well": "B02", **r} for r in rows[:1]])
    assert merge_well_tables(url, "objects", ["A01", "B02", "C03"]) == 4
    df = pd.read_parquet(f"{url}/tables/objects.parquet")  # one call, any Parquet reader
    assert list(df["well"]) == ["A01", "A01", "A01", "B02"]
    truth = {
        i: _disc(labels.shape, cy, cx, r).sum() for i, (cy, cx, r, *_) in enumerate(OBJECTS, 1)
    }
    for _, row in df[df.well == "A01"].iterrows():
        assert row["area"] == truth[row["label"]]
        _, _, _, a, b = OBJECTS[row["label"] - 1]
        assert (row["intensity_mean_c1"], row["intensity_mean_c2"]) == (a, b)
    assert read_table(table_url(url, "objects", "B02")).num_rows == 1
    from prefect_hcs.formats.validate_zarr import validate_plate

    w.write_field(
        "A01", 0, ch[None, :, None].astype(np.uint16), channel_names=["a", "b"], pixel_size_um=0.5
    )
    assert not any("tables" in p for p in validate_plate(url))


@pytest.mark.server
def test_demo_objects_writes_ngff_labels_and_object_tables_inside_the_plate(
    prefect_server, tmp_path
):
    """The demo-objects run: labels found by ome-zarr-py, Parquet tables read in one call and checked
    against the synthetic plate's truth and against the label images themselves."""
    import pandas as pd
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    from prefect_hcs.runtime.flow import process_plate
    from prefect_hcs.testing.synthetic import make_plate

    plate = tmp_path / "Obj"
    truth = make_plate(
        str(plate), format="phenix", wells=["A01", "B02"], sites=1, channels=2, z=1, size=256,
        seed=7,
    )  # fmt: skip
    state = process_plate(plate=str(plate), pipeline="demo-objects", return_state=True)
    assert state.is_completed(), state.message
    zarr_url = state.result()["output"]

    df = pd.read_parquet(f"{zarr_url}/tables/measure_objects.parquet")
    assert sorted(df["well"].unique()) == ["A01", "B02"]
    for col in ("area", "centroid_y", "bbox_max_x", "intensity_mean_c1", "intensity_sum_c2"):
        assert col in df.columns, col
    for well in ("A01", "B02"):
        rows = df[df.well == well]
        true = truth["wells"][well]["nuclei"]
        assert abs(len(rows) - true) <= max(2, 0.15 * true), (well, len(rows), true)
        labels = read_labels(zarr_url, well, 0, "nuclei")[0, 0, 0]
        areas = np.bincount(labels.ravel())
        for _, r in rows.iterrows():  # the table describes exactly the written label image
            assert areas[int(r["label"])] == r["area"]
        well_df = pd.read_parquet(table_url(zarr_url, "measure_objects", well))
        assert len(well_df) == len(rows)
        # every true nucleus (canvas coordinates, shifted into the one field) has a measured
        # centroid within 3 px; a found object away from every true one would be a false positive
        ty, tx = truth["wells"][well]["tile_positions"]["1"]
        centres = np.array(truth["wells"][well]["nuclei_centres"]) - [ty, tx]
        found = rows[["centroid_y", "centroid_x"]].to_numpy()
        dist = np.linalg.norm(centres[:, None, :] - found[None, :, :], axis=2)
        assert dist.min(axis=1).max() < 3, dist.min(axis=1)  # measured: 2.2 (A01), 2.5 (B02)
        assert np.percentile(dist.min(axis=0), 90) < 3, dist.min(axis=0)

    nodes = list(Reader(parse_url(f"{zarr_url}/B/2/0"))())
    assert any(isinstance(s, Label) for n in nodes for s in n.specs)
    from prefect_hcs.formats.validate_zarr import validate_plate

    assert validate_plate(zarr_url) == []  # yaozarrs + ome-zarr-models accept the labels
