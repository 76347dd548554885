"""Every bad input of docs/bad-input.md: the message the user sees, and that nothing is lost.

Each CASES entry is one row of the table in docs/bad-input.md (the last test checks the table and
this list agree). Compile-time cases call the same code as `prefect-hcs plan`; run-time cases run
the flow against the session's real Prefect server.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from prefect_hcs.errors import UserFacingError
from prefect_hcs.runtime.compile import compile_from_parameters
from prefect_hcs.testing.omero_standin import standin_host
from prefect_hcs.testing.synthetic import make_plate

ROOT = Path(__file__).resolve().parents[1]


def _plate(tmp: Path, fmt: str = "imagexpress", name: str = "P") -> Path:
    plate = tmp / name
    make_plate(
        str(plate), format=fmt, wells=["A01", "A02"], sites=4, channels=2, z=1, size=64, seed=1
    )
    return plate


def _compile_error(*args, **kwargs) -> str:
    with pytest.raises(UserFacingError) as info:
        compile_from_parameters(*args, **kwargs)
    return str(info.value)


def _run_message(plate: str, **params) -> str:
    from prefect_hcs.runtime.flow import process_plate

    state = process_plate(plate=plate, return_state=True, **params)
    assert state.is_failed(), state
    return str(state.result(raise_on_failure=False))


# ------------------------------------------------------------------------------------- cases
def case_missing_image(tmp: Path, _server) -> str:
    plate = _plate(tmp)
    victim = sorted(plate.rglob("*_A02_s3_w2*.tif"))[0]
    victim.unlink()
    return _compile_error(str(plate))


def case_truncated_tiff(tmp: Path, server) -> str:
    plate = _plate(tmp)
    victim = sorted(plate.rglob("*_A02_s2_w1*.tif"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    return _run_message(str(plate))


def case_malformed_htd(tmp: Path, _server) -> str:
    plate = _plate(tmp)
    htd = next(plate.glob("*.HTD"))
    htd.write_text(htd.read_text().replace('"XSites", 2', '"XSites", two'))
    return _compile_error(str(plate))


def case_malformed_index_xml(tmp: Path, _server) -> str:
    plate = _plate(tmp, "phenix")
    index = plate / "Images" / "Index.idx.xml"
    index.write_text(index.read_text()[:-200])
    return _compile_error(str(plate))


def case_unknown_function(tmp: Path, _server) -> str:
    return _compile_error(str(_plate(tmp)), {"name": "x", "steps": [{"func": "max_projektion"}]})


def case_wrong_kwargs(tmp: Path, _server) -> str:
    steps = [{"func": {"name": "tophat_background", "kwargs": {"radius": 15, "sigma": 2}}}]
    return _compile_error(str(_plate(tmp)), {"name": "x", "steps": steps})


def case_invalid_config_value(tmp: Path, _server) -> str:
    cfg = tmp / "pipeline.yaml"
    cfg.write_text("vfs_config:\n  materialization_backend: omero_local\n")
    return _compile_error(str(_plate(tmp)), "demo", None, str(cfg))


def case_missing_block(tmp: Path, server) -> str:
    return _compile_error(str(_plate(tmp)), "demo", "no-such-global-config")


def case_plate_path_escapes(tmp: Path, _server) -> str:
    plate = _plate(tmp)
    return _compile_error(f"{tmp}/sub/../{plate.name}")


def case_output_path_escapes(tmp: Path, _server) -> str:
    cfg = tmp / "global.yaml"
    cfg.write_text(f"path_planning_config:\n  global_output_folder: {tmp}/out/../../elsewhere\n")
    return _compile_error(str(_plate(tmp)), "demo", str(cfg))


def case_output_holds_other_plate(tmp: Path, server) -> str:
    """Two different plates with the same name write to the same output folder."""
    first = _plate(tmp / "run1", name="Same")
    second = tmp / "run2" / "Same"
    make_plate(
        str(second),
        format="imagexpress",
        wells=["A01", "A02"],
        sites=4,
        channels=2,
        z=1,
        size=64,
        seed=2,
    )
    cfg = tmp / "global.yaml"
    cfg.write_text(f"path_planning_config:\n  global_output_folder: {tmp / 'shared'}\n")
    from prefect_hcs.runtime.flow import process_plate

    assert process_plate(plate=str(first), global_config=str(cfg), return_state=True).is_completed()
    zarr_json = tmp / "shared" / "Same_hcs" / "Same.ome.zarr" / "zarr.json"
    before = zarr_json.read_bytes()
    message = _run_message(str(second), global_config=str(cfg))
    assert zarr_json.read_bytes() == before  # the first plate's results are untouched
    return message


def _standin(tmp: Path):
    from prefect_hcs.formats.detect import open_plate
    from prefect_hcs.testing.omero_standin import StandinServer

    server = StandinServer.create(tmp / "omero")
    server.add_user("alice", group="lab")
    server.add_user("bob", group="other")
    server.add_user("carol", password="right-password", group="lab")
    plate_id = server.import_plate_from_layout(open_plate(str(_plate(tmp))), group="lab")
    return server, plate_id


def case_omero_plate_missing(tmp: Path, _server) -> str:
    _standin(tmp)
    opts = {"host": standin_host(str(tmp / "omero")), "user": "alice", "group": "lab"}
    return _compile_error("omero://plate_999", "demo", None, None, opts)


def case_omero_plate_other_group(tmp: Path, _server) -> str:
    _, plate_id = _standin(tmp)
    opts = {"host": standin_host(str(tmp / "omero")), "user": "bob", "group": "other"}
    return _compile_error(f"omero://plate_{plate_id}", "demo", None, None, opts)


def case_omero_wrong_password(tmp: Path, _server) -> str:
    from prefect_hcs.storage.plates import discover_plate

    _, plate_id = _standin(tmp)
    opts = {"host": standin_host(str(tmp / "omero")), "user": "carol", "password": "wrong-password"}
    with pytest.raises(UserFacingError) as info:
        discover_plate(f"omero://plate_{plate_id}", opts)
    assert "wrong-password" not in str(info.value)
    return str(info.value)


def case_disk_full(tmp: Path, _server, monkeypatch=None) -> str:
    from fsspec.implementations.local import LocalFileSystem

    from prefect_hcs.runtime import io as hio

    original = LocalFileSystem.pipe_file

    def full(self, path, value, **kw):
        original(self, path, value[: len(value) // 2], **kw)  # a partial write, then the error
        raise OSError(errno.ENOSPC, "No space left on device")

    LocalFileSystem.pipe_file = full
    try:
        with pytest.raises(UserFacingError) as info:
            hio.write_bytes(str(tmp / "out" / "table.csv"), b"x" * 1000)
    finally:
        LocalFileSystem.pipe_file = original
    assert list((tmp / "out").iterdir()) == []  # no partial file left
    return str(info.value)


# (id, function, needs a Prefect server, regex the message must match)
CASES = [
    ("missing image files", case_missing_image, False, r"missing.*A02"),
    ("truncated or corrupt TIFF", case_truncated_tiff, True, r"A02.*cannot read TIFF .*_A02_s2_w1.*corrupt or truncated"),
    ("malformed HTD", case_malformed_htd, False, r"malformed HTD file .*\.HTD, line \d+: 'XSites' must be an integer"),
    ("malformed Index.xml", case_malformed_index_xml, False, r"malformed Harmony index .*Index\.idx\.xml: XML error at line \d+"),
    ("unknown function", case_unknown_function, False, r"max_projektion.*max_projection"),
    ("wrong kwargs", case_wrong_kwargs, False, r"tophat_background.*sigma"),
    ("invalid config value", case_invalid_config_value, False, r"invalid pipeline config \(.*pipeline\.yaml\).*'omero_local' is not allowed\. Allowed values: auto, disk, memory, zarr, omero"),
    ("block name that does not exist", case_missing_block, True, r"no hcs-global-config block named 'no-such-global-config'"),
    ("plate path escapes its root", case_plate_path_escapes, False, r"contains '\.\.'"),
    ("output path escapes its root", case_output_path_escapes, False, r"global_output_folder = .* contains '\.\.'"),
    ("output folder holds another plate", case_output_holds_other_plate, True, r"already holds plate 'Same'.*--overwrite"),
    ("OMERO plate does not exist", case_omero_plate_missing, False, r"plate 999"),
    ("OMERO plate of another group", case_omero_plate_other_group, False, r"(?i)group"),
    ("wrong OMERO password", case_omero_wrong_password, False, r"(?i)login|password|authentic"),
    ("disk full while writing", case_disk_full, False, r"cannot write .*table\.csv: No space left on device.*Nothing partial was left"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case_id", "func", "needs_server", "pattern"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input(case_id, func, needs_server, pattern, tmp_path, request):
    server = request.getfixturevalue("prefect_server") if needs_server else None
    message = func(tmp_path, server)
    assert re.search(pattern, message, re.S), f"{case_id}: {message}"
    assert "Traceback" not in message


def test_docs_table_lists_every_case():
    # The first table; later sections (e.g. plates that point outside themselves) name their tests.
    table = (ROOT / "docs" / "bad-input.md").read_text().split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    listed = [r.split("|")[1].strip() for r in rows]
    assert listed == [c[0] for c in CASES]
