"""The omero filesystem over the stand-in: paths, planes, outputs as FileAnnotations, errors."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest
import tifffile

from prefect_hcs.storage.omero_errors import (
    OmeroAuthError,
    OmeroConnectionError,
    OmeroError,
    OmeroNotFound,
    OmeroPermissionDenied,
)
from prefect_hcs.storage.omero_fs import OmeroFileSystem
from prefect_hcs.storage.omero_paths import OUTPUT_NS
from prefect_hcs.testing.omero_standin import StandinServer, standin_host

PASSWORD = "pw-alice-7f3"


@pytest.fixture(autouse=True)
def _register() -> None:
    # The `fsspec.specs` entry point does this once the package is (re)installed.
    fsspec.register_implementation(
        "omero", "prefect_hcs.storage.omero_fs.OmeroFileSystem", clobber=True
    )


def _pixels(seed: int, t: int = 1, c: int = 2, z: int = 2, y: int = 12, x: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, (t, c, z, y, x)).astype("uint16")


@pytest.fixture
def standin(tmp_path: Path) -> dict:
    server = StandinServer.create(tmp_path / "omero")
    server.add_user("alice", PASSWORD, group="lab")
    server.add_user("bob", "pw-bob", group="other-lab")
    wells = {"A01": [_pixels(1), _pixels(2)], "B03": [_pixels(3), _pixels(4)]}
    plate = server.add_plate("screen-1", "lab", wells, channel_names=["DAPI", "GFP"])
    theirs = server.add_plate("private", "other-lab", {"A01": [_pixels(9)]})
    opts = {"host": standin_host(str(tmp_path / "omero")), "user": "alice", "password": PASSWORD}
    return {"server": server, "plate": plate, "theirs": theirs, "wells": wells, "opts": opts}


@pytest.fixture
def fs(standin: dict) -> OmeroFileSystem:
    return OmeroFileSystem(**standin["opts"], retry_delay=0.0, skip_instance_cache=True)


def test_registered_with_fsspec(standin: dict) -> None:
    plate = standin["plate"]
    fs = fsspec.filesystem("omero", **standin["opts"])
    assert isinstance(fs, OmeroFileSystem)
    with fsspec.open(f"omero://plate_{plate}/outputs/hello.txt", "w", **standin["opts"]) as fh:
        fh.write("hi")
    with fsspec.open(f"omero://plate_{plate}/outputs/hello.txt", "r", **standin["opts"]) as fh:
        assert fh.read() == "hi"
    # zarr passes asynchronous=True: accepted, and a separately cached instance shares the session
    other = fsspec.filesystem("omero", asynchronous=True, **standin["opts"])
    assert other is not fs and other.adapter is fs.adapter


def test_virtual_tree(fs: OmeroFileSystem, standin: dict) -> None:
    p = f"plate_{standin['plate']}"
    assert fs.ls(p, detail=False) == [f"{p}/A01", f"{p}/B03", f"{p}/outputs"]
    assert fs.ls(f"{p}/A01", detail=False) == [f"{p}/A01/s001", f"{p}/A01/s002", f"{p}/A01/outputs"]
    planes = fs.ls(f"omero://{p}/B03/s002", detail=False)
    assert f"{p}/B03/s002/B03_s002_w2_z001_t001.tif" in planes
    assert len(planes) == 2 * 2 * 1 + 1
    for d in (p, f"{p}/A01", f"{p}/A01/s001", f"{p}/outputs", f"{p}/A01/s002/outputs"):
        assert fs.isdir(d) and fs.exists(d)
    assert not fs.exists(f"{p}/C01")
    assert not fs.exists(f"{p}/A01/s003")
    assert not fs.exists(f"{p}/A01/s001/A01_s001_w3_z001_t001.tif")


def test_planes_equal_imported_pixels(fs: OmeroFileSystem, standin: dict) -> None:
    p, pixels = f"plate_{standin['plate']}", standin["wells"]["B03"][1]
    path = f"{p}/B03/s002/B03_s002_w2_z002_t001.tif"
    expected = pixels[0, 1, 1]
    np.testing.assert_array_equal(fs.read_plane_array(path), expected)
    data = fs.cat_file(path)
    assert fs.info(path)["size"] == len(data) == fs.size(path)
    np.testing.assert_array_equal(tifffile.imread(io.BytesIO(data)), expected)
    with fs.open(path, "rb") as fh:
        np.testing.assert_array_equal(tifffile.imread(fh), expected)
    assert fs.cat_file(path, start=0, end=4) == data[:4]


def test_mkdir_is_a_noop_and_never_touches_local_disk(
    fs: OmeroFileSystem, standin: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "worker-cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    p = f"plate_{standin['plate']}"
    before = set(os.listdir(cwd)), set(os.listdir("/"))
    for path in (f"omero://{p}/outputs/checkpoints_step0", f"{p}/A01/outputs/a/b", p):
        fs.makedirs(path, exist_ok=True)
        fs.mkdir(path)
    assert (set(os.listdir(cwd)), set(os.listdir("/"))) == before == (set(), before[1])
    assert not os.path.exists("/omero")
    # an empty virtual folder does not exist until a file lands in it
    assert not fs.exists(f"{p}/outputs/checkpoints_step0")
    fs.pipe_file(f"{p}/outputs/checkpoints_step0/A01.npy", b"x")
    assert fs.isdir(f"{p}/outputs/checkpoints_step0")


def test_outputs_are_file_annotations_on_the_named_object(
    fs: OmeroFileSystem, standin: dict
) -> None:
    p = f"plate_{standin['plate']}"
    fs.pipe_file(f"{p}/outputs/tables/measurements.csv", b"well,count\nA01,3\n")
    fs.pipe_file(f"{p}/A01/outputs/qc.json", b'{"ok": true}')
    fs.pipe_file(f"{p}/A01/s002/outputs/mask.tif", b"tiff!")
    plate = fs.plate(standin["plate"])
    adapter = fs.adapter
    on_plate = adapter.list_file_annotations(("Plate", standin["plate"]), OUTPUT_NS)
    assert [(a.path, a.name, a.size, a.mimetype) for a in on_plate] == [
        ("tables", "measurements.csv", 17, "text/csv")
    ]
    on_well = adapter.list_file_annotations(("Well", plate.wells[0].well_id), OUTPUT_NS)
    assert [a.name for a in on_well] == ["qc.json"]
    image_id = plate.wells[0].images[1].image_id
    assert [a.name for a in adapter.list_file_annotations(("Image", image_id))] == ["mask.tif"]
    listing = fs.ls(f"{p}/outputs", detail=True)
    assert [(e["name"], e["type"]) for e in listing] == [(f"{p}/outputs/tables", "directory")]
    [entry] = fs.ls(f"{p}/outputs/tables")
    assert entry["name"] == f"{p}/outputs/tables/measurements.csv" and entry["size"] == 17
    assert fs.cat(f"omero://{p}/outputs/tables/measurements.csv") == b"well,count\nA01,3\n"
    assert fs.cat_file(f"{p}/outputs/tables/measurements.csv", start=5, end=10) == b"count"
    assert fs.find(f"{p}/A01/outputs") == [f"{p}/A01/outputs/qc.json"]
    assert fs.find(f"omero://{p}/A01/s002/outputs") == [f"{p}/A01/s002/outputs/mask.tif"]


def test_overwrite_replaces_only_after_the_new_upload_succeeded(
    fs: OmeroFileSystem, standin: dict
) -> None:
    server, path = standin["server"], f"plate_{standin['plate']}/outputs/result.csv"
    fs.pipe_file(path, b"v1")
    before = server.counts()
    server.inject_fault("upload_file_annotation", error="server", midway=True)
    with pytest.raises(OmeroError):
        fs.pipe_file(path, b"v2")
    assert fs.cat_file(path) == b"v1" and server.counts() == before  # nothing half-written
    server.inject_fault("link_annotation", error="server")
    with pytest.raises(OmeroError):
        fs.pipe_file(path, b"v2")
    assert fs.cat_file(path) == b"v1" and server.counts() == before  # new one cleaned up
    fs.pipe_file(path, b"v3")
    assert fs.cat_file(path) == b"v3" and server.counts() == before  # old one deleted
    assert len(fs.ls(f"plate_{standin['plate']}/outputs")) == 1


def test_exception_inside_write_uploads_nothing(fs: OmeroFileSystem, standin: dict) -> None:
    path = f"plate_{standin['plate']}/outputs/partial.bin"
    with pytest.raises(RuntimeError), fs.open(path, "wb") as fh:
        fh.write(b"half")
        raise RuntimeError("step crashed")
    assert not fs.exists(path)


def test_exclusive_create_copy_and_rm(fs: OmeroFileSystem, standin: dict) -> None:
    p = f"plate_{standin['plate']}"
    with fs.open(f"{p}/outputs/a.txt", "xb") as fh:
        fh.write(b"A")
    with pytest.raises(FileExistsError):
        fs.open(f"{p}/outputs/a.txt", "xb")
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{p}/outputs/a.txt", b"B", mode="create")
    fs.cp_file(f"{p}/outputs/a.txt", f"{p}/B03/outputs/copy/a.txt")
    assert fs.cat(f"{p}/B03/outputs/copy/a.txt") == b"A"
    fs.cp_file(f"{p}/A01/s001/A01_s001_w1_z001_t001.tif", f"{p}/outputs/plane.tif")
    assert fs.cat(f"{p}/outputs/plane.tif") == fs.cat(f"{p}/A01/s001/A01_s001_w1_z001_t001.tif")
    fs.rm(f"{p}/B03/outputs/copy", recursive=True)
    assert not fs.exists(f"{p}/B03/outputs/copy/a.txt")
    fs.rm(f"{p}/outputs/a.txt")
    with pytest.raises(FileNotFoundError):
        fs.cat(f"{p}/outputs/a.txt")
    with pytest.raises(FileNotFoundError):
        fs.rm_file(f"{p}/outputs/never.txt")


def test_planes_and_plate_folders_are_read_only(fs: OmeroFileSystem, standin: dict) -> None:
    p = f"plate_{standin['plate']}"
    with pytest.raises(PermissionError, match="read-only"):
        fs.pipe_file(f"{p}/A01/s001/A01_s001_w1_z001_t001.tif", b"x")
    with pytest.raises(PermissionError, match="read-only"):
        fs.rm(f"{p}/A01/s001/A01_s001_w1_z001_t001.tif")
    with pytest.raises(NotImplementedError, match="'ab'"):
        fs.open(f"{p}/outputs/x.txt", "ab")


@pytest.mark.parametrize(
    "path",
    [
        "/omero/plate_403_outputs/checkpoints_step0",  # the seed bug's path
        "omero://plate_x/A01",
        "omero://A01/s001",
        "omero://plate_1/A01/site1",
        "omero://plate_1/A01/s001/A02_s001_w1_z001_t001.tif",
        "omero://plate_1/outputs/../../etc",
    ],
)
def test_paths_outside_the_scheme_are_rejected(fs: OmeroFileSystem, path: str) -> None:
    with pytest.raises(ValueError, match=r"omero://|not allowed") as info:
        fs.makedirs(path)
    assert "omero" in str(info.value)
    assert not fs.exists(path)


def test_transient_errors_are_retried(fs: OmeroFileSystem, standin: dict) -> None:
    server, p = standin["server"], f"plate_{standin['plate']}"
    server.inject_fault("get_plate", times=2)
    server.inject_fault("upload_file_annotation", times=1, midway=True)
    fs.pipe_file(f"{p}/outputs/retry.txt", b"ok")
    assert fs.cat(f"{p}/outputs/retry.txt") == b"ok"
    assert server.counts()["originalfiles"] == 1  # the broken upload rolled back
    server.inject_fault("read_plane", times=10)
    with pytest.raises(OmeroConnectionError, match="gave up after 4 attempts"):
        fs.read_plane_array(f"{p}/A01/s001/A01_s001_w1_z001_t001.tif")


def test_wrong_password_is_an_auth_error_without_the_password(standin: dict) -> None:
    opts = {**standin["opts"], "password": "not-the-Secret-42"}
    fs = OmeroFileSystem(**opts, skip_instance_cache=True)
    with pytest.raises(OmeroAuthError) as info:
        fs.ls(f"plate_{standin['plate']}")
    assert "not-the-Secret-42" not in str(info.value)
    assert PASSWORD not in repr(fs) and "not-the-Secret-42" not in repr(fs)
    assert PASSWORD not in repr(fs.adapter)
    with pytest.raises(OmeroAuthError, match="not a member"):
        OmeroFileSystem(**standin["opts"], group="other-lab", skip_instance_cache=True).ls(
            f"plate_{standin['plate']}"
        )


def test_another_groups_plate_is_a_permission_error(fs: OmeroFileSystem, standin: dict) -> None:
    p = f"plate_{standin['theirs']}"
    with pytest.raises(OmeroPermissionDenied, match="alice"):
        fs.ls(p)
    with pytest.raises(PermissionError):
        fs.pipe_file(f"{p}/outputs/x.txt", b"x")
    assert standin["server"].counts()["originalfiles"] == 0


def test_unknown_plate(fs: OmeroFileSystem) -> None:
    with pytest.raises(OmeroNotFound, match="Plate 999"):
        fs.ls("plate_999")
    assert not fs.exists("plate_999")
    assert not fs.isdir("plate_999/outputs")


def test_filesystem_pickles_and_works_in_another_process(standin: dict, tmp_path: Path) -> None:
    """Storage options are plain JSON: a worker process rebuilds the filesystem from them."""
    fs = OmeroFileSystem(**standin["opts"])
    fs.ls(f"plate_{standin['plate']}")
    clone = pickle.loads(pickle.dumps(fs))
    assert clone.ls(f"plate_{standin['plate']}", detail=False)
    script = (
        "import json, sys, fsspec\n"
        "opts = json.loads(sys.argv[1])\n"
        "fsspec.register_implementation('omero', "
        "'prefect_hcs.storage.omero_fs.OmeroFileSystem', clobber=True)\n"
        "with fsspec.open(sys.argv[2], 'wb', **opts) as fh:\n"
        "    fh.write(b'from a worker')\n"
    )
    url = f"omero://plate_{standin['plate']}/A01/outputs/worker.txt"
    subprocess.run(
        [sys.executable, "-c", script, json.dumps(standin["opts"]), url], check=True, timeout=60
    )
    assert fs.cat(url) == b"from a worker"


def test_storage_options_need_one_connection_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one connection source"):
        OmeroFileSystem(skip_instance_cache=True)
    with pytest.raises(ValueError, match="user="):
        OmeroFileSystem(host=standin_host(str(tmp_path)), skip_instance_cache=True)


def test_gateway_option_uses_a_given_adapter(standin: dict) -> None:
    adapter = standin["server"].connect("alice", PASSWORD)
    fs = OmeroFileSystem(gateway=adapter, skip_instance_cache=True)
    assert fs.adapter is adapter
    assert fs.exists(f"plate_{standin['plate']}/A01/s001")
