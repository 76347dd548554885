"""One decoded plane per TIFF compression at compile time, for every vendor (Harmony, CellVoyager)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tifffile

from prefect_hcs.formats import PlateError, open_plate
from prefect_hcs.testing.generators import make_any_plate


def _set_compression_tag(path: Path, code: int) -> None:
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages.first.tags["Compression"].valueoffset
    data = bytearray(path.read_bytes())
    data[offset : offset + 2] = code.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def _tiffs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tif*") if p.is_file())


@pytest.mark.parametrize(
    ("fmt", "variant"), [("phenix", "v5"), ("operetta", "v7"), ("cellvoyager", None)]
)
def test_unknown_codec_everywhere_is_one_compile_error(
    tmp_path: Path, fmt: str, variant: str | None
) -> None:
    make_any_plate(
        str(tmp_path),
        format=fmt,
        variant=variant,
        wells=["A01", "B02"],
        sites=2,
        channels=2,
        z=1,
        size=48,
    )
    assert open_plate(str(tmp_path)).images
    for image in _tiffs(tmp_path):
        _set_compression_tag(image, 60001)
    with pytest.raises(PlateError, match=r"cannot read TIFF .*60001") as err:
        open_plate(str(tmp_path))
    assert "\n" not in str(err.value)


def test_one_damaged_harmony_file_is_a_warning(tmp_path: Path) -> None:
    make_any_plate(
        str(tmp_path), format="phenix", variant="v5", wells=["A01", "B02"], sites=2, channels=1,
        z=1, size=48,
    )  # fmt: skip
    first = Path(open_plate(str(tmp_path)).images[0].path)
    with tifffile.TiffFile(first) as tif:
        assert tif.pages.first.compression.name == "LZW"
        offset, count = tif.pages.first.dataoffsets[0], tif.pages.first.databytecounts[0]
    data = bytearray(first.read_bytes())
    data[offset : offset + count] = b"\xff" * count  # LZW stream garbage, header intact
    first.write_bytes(bytes(data))
    layout = open_plate(str(tmp_path))
    assert any(f"cannot read TIFF {first}" in w for w in layout.warnings)
