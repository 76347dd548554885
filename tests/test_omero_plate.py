"""OMERO plate handler: an OMERO plate (in the stand-in) -> PlateLayout, and plate import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prefect_hcs.formats.layout import PlateError
from prefect_hcs.storage.omero_errors import OmeroNotFound, OmeroPermissionDenied
from prefect_hcs.storage.omero_fs import OmeroFileSystem
from prefect_hcs.storage.omero_paths import PLATE_NS
from prefect_hcs.storage.omero_plate import open_omero_plate
from prefect_hcs.testing.omero_standin import StandinServer, standin_host


@pytest.fixture
def server(tmp_path: Path) -> StandinServer:
    server = StandinServer.create(tmp_path / "omero")
    server.add_user("alice", "pw", group="lab")
    server.add_user("bob", "pw", group="elsewhere")
    return server


def _opts(server: StandinServer, user: str = "alice") -> dict:
    return {"host": standin_host(str(server.directory)), "user": user, "password": "pw"}


def _arrays(t: int, c: int, z: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (t, c, z, 6, 7)).astype("uint8")


def test_layout_from_plate_map(server: StandinServer) -> None:
    wells = {
        w: [_arrays(2, 2, 3, i), _arrays(2, 2, 3, i + 10)] for i, w in enumerate(["B02", "A01"])
    }
    plate_map = {
        "grid_rows": "1",
        "grid_cols": "2",
        "overlap": "0.1",
        "pixel_size_um": "0.65",
        "channel_names": '["DAPI", "GFP"]',
    }
    plate_id = server.add_plate(
        "p", "lab", wells, channel_names=["ch-a", "ch-b"], plate_map=plate_map
    )
    layout = open_omero_plate(f"omero://plate_{plate_id}", _opts(server))
    assert layout.format == "omero" and layout.plate_id == f"plate_{plate_id}"
    assert layout.url == f"omero://plate_{plate_id}"
    assert layout.wells == ("A01", "B02")
    assert (layout.sites, layout.channels, layout.z_planes, layout.timepoints) == (
        (1, 2),
        (1, 2),
        (1, 2, 3),
        (1, 2),
    )
    assert layout.grid == (1, 2) and layout.tile_overlap == 0.1 and layout.pixel_size_um == 0.65
    assert layout.channel_names == {1: "DAPI", 2: "GFP"}
    assert (layout.image_shape, layout.dtype) == ((6, 7), "uint8")
    assert len(layout.images) == 2 * 2 * 2 * 3 * 2
    ref = next(
        r
        for r in layout.images
        if (r.well, r.site, r.channel, r.z, r.timepoint) == ("B02", 2, 1, 3, 2)
    )
    assert ref.path == f"plate_{plate_id}/B02/s002/B02_s002_w1_z003_t002.tif"
    fs = OmeroFileSystem(**_opts(server))
    np.testing.assert_array_equal(fs.read_plane_array(ref.path), wells["B02"][1][1, 0, 2])


def test_without_plate_map_channel_names_come_from_images(server: StandinServer) -> None:
    plate_id = server.add_plate(
        "p", "lab", {"C05": [_arrays(1, 2, 1, 0)]}, channel_names=["a", "b"]
    )
    layout = open_omero_plate(f"omero://plate_{plate_id}", _opts(server))
    assert layout.grid is None and layout.tile_overlap is None
    assert layout.channel_names == {1: "a", 2: "b"}
    assert layout.wells == ("C05",)


def test_unknown_plate_and_other_groups_plate(server: StandinServer) -> None:
    plate_id = server.add_plate("p", "lab", {"A01": [_arrays(1, 1, 1, 0)]})
    with pytest.raises(OmeroNotFound, match="plate 4242 .*not found for user 'alice'"):
        open_omero_plate("omero://plate_4242", _opts(server))
    with pytest.raises(OmeroPermissionDenied, match="'bob'"):
        open_omero_plate(f"omero://plate_{plate_id}", _opts(server, "bob"))
    with pytest.raises(PlateError, match="open the plate itself"):
        open_omero_plate(f"omero://plate_{plate_id}/A01", _opts(server))


def test_inconsistent_images_are_rejected(server: StandinServer) -> None:
    plate_id = server.add_plate(
        "p", "lab", {"A01": [_arrays(1, 1, 1, 0)], "A02": [_arrays(1, 2, 1, 0)]}
    )
    with pytest.raises(PlateError, match="all images must match"):
        open_omero_plate(f"omero://plate_{plate_id}", _opts(server))


def test_import_imagexpress_plate_round_trips(server: StandinServer, tmp_path: Path) -> None:
    """A synthetic ImageXpress plate imported into the stand-in reads back plane for plane."""
    synthetic = pytest.importorskip("prefect_hcs.testing.synthetic")
    from prefect_hcs.formats.detect import read_plane
    from prefect_hcs.formats.imagexpress import open_imagexpress

    disk = tmp_path / "ix"
    synthetic.make_plate(
        str(disk), format="imagexpress", wells=["A01", "B02"], sites=2, channels=2, z=1, size=32
    )
    on_disk = open_imagexpress(str(disk))
    plate_id = server.import_plate_from_layout(on_disk, group="lab", owner="alice")
    layout = open_omero_plate(f"omero://plate_{plate_id}", _opts(server))
    assert (layout.wells, layout.sites, layout.channels) == (
        on_disk.wells,
        on_disk.sites,
        on_disk.channels,
    )
    assert layout.grid == on_disk.grid and layout.channel_names == on_disk.channel_names
    assert layout.tile_overlap == on_disk.tile_overlap
    fs = OmeroFileSystem(**_opts(server))
    meta = fs.plate_map(plate_id, PLATE_NS)
    assert meta["source_format"] == "imagexpress"
    for ref in on_disk.images:
        twin = next(
            r
            for r in layout.images
            if (r.well, r.site, r.channel, r.z, r.timepoint)
            == (ref.well, ref.site, ref.channel, ref.z, ref.timepoint)
        )
        np.testing.assert_array_equal(fs.read_plane_array(twin.path), read_plane(str(disk), ref))
