"""Vendor detection through the handler registry: strongest evidence wins, ties by vendor order."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from prefect_hcs.formats import PlateError, detect_format, open_plate
from prefect_hcs.formats.handlers import Evidence, handlers, register


def _folder(tmp_path: Path, *names: str) -> str:
    root = tmp_path / "plate"
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return str(root)


def _detect(root: str) -> str:
    return detect_format(fsspec.filesystem("file"), root)


def test_every_vendor_is_registered_in_tie_breaking_order() -> None:
    assert [h.name for h in handlers()] == ["imagexpress", "phenix", "cellvoyager"]


@pytest.mark.parametrize(
    ("names", "vendor"),
    [
        (["P1.HTD"], "imagexpress"),
        (["Images/Index.idx.xml"], "phenix"),
        (["MeasurementData.mlf"], "cellvoyager"),
        (["P1_A01_s1_w1.tif"], "imagexpress"),  # names only: an acquisition folder
        # a metadata file beats MetaXpress-like names, whatever the registration order
        (["P1_A01_s1_w1.tif", "Index.xml"], "phenix"),
        (["P1_A01_s1_w1.tif", "MeasurementData.mlf"], "cellvoyager"),
        # two vendors' metadata: the first registered vendor (as before the registry)
        (["P1.HTD", "Index.xml", "MeasurementData.mlf"], "imagexpress"),
        (["Index.xml", "MeasurementData.mlf"], "phenix"),
    ],
)
def test_detection(tmp_path: Path, names: list[str], vendor: str) -> None:
    assert _detect(_folder(tmp_path, *names)) == vendor


def test_foreign_and_empty_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(PlateError, match="Nikon .nd2"):
        _detect(_folder(tmp_path / "a", "x.nd2"))
    with pytest.raises(PlateError, match="no plate metadata"):
        _detect(_folder(tmp_path / "b", "notes.txt"))


def test_unknown_format_lists_the_registered_vendors(tmp_path: Path) -> None:
    with pytest.raises(PlateError, match="auto, imagexpress, phenix, cellvoyager"):
        open_plate(_folder(tmp_path, "P1.HTD"), format="nikon")


def test_a_new_vendor_is_one_registration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler registered by its own module is detected and opened; nothing else changes."""
    from prefect_hcs.formats import handlers as registry

    class Toy:
        name = "toy"

        def detect(self, fs, root):  # type: ignore[no-untyped-def]
            return Evidence.METADATA if fs.exists(f"{root}/toy.json") else Evidence.NONE

        def open(self, url, storage_options, fs):  # type: ignore[no-untyped-def]
            raise PlateError(f"toy handler opened {url}")

    monkeypatch.setattr(registry, "_HANDLERS", dict(registry._HANDLERS))
    register(Toy())
    root = _folder(tmp_path, "toy.json")
    assert _detect(root) == "toy"
    with pytest.raises(PlateError, match="toy handler opened"):
        open_plate(root)
