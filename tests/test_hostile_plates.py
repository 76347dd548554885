"""Plates that point outside themselves, or off the plate: one clear compile-time error each.

Every file a plate handler reads must resolve inside the plate folder (after normalising and
resolving symlinks); every well must lie on the plate the metadata declares. Each case is checked
through `prefect-hcs plan` (exit 2, one ``error:`` line, no traceback) or the handler directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_hcs.formats import PlateError, open_plate
from prefect_hcs.formats.paths import inside_root
from prefect_hcs.testing.synthetic_cellvoyager import make_cellvoyager_plate
from prefect_hcs.testing.synthetic_harmony import make_harmony_plate

FIRST = "r01c01f01p01-ch1sk1fk1fl1.tiff"


def _harmony(tmp_path: Path, variant: str = "v5") -> tuple[Path, Path]:
    root = tmp_path / "plates" / "P1"
    make_harmony_plate(
        str(root), wells=["A01", "A02"], sites=1, channels=1, z=1, size=32, variant=variant
    )
    name = "Index.xml" if variant == "v7" else "Index.idx.xml"
    return root, root / "Images" / name


def _edit(index: Path, old: str, new: str, count: int = 1) -> None:
    text = index.read_text(encoding="utf-8-sig")
    assert old in text, old
    index.write_text(text.replace(old, new, count), encoding="utf-8")


def _plan(plate: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("prefect-hcs")
    env = {**os.environ, "COLUMNS": "2000"}  # one error line stays one line
    return subprocess.run(
        [str(exe), "plan", str(plate)], capture_output=True, text=True, timeout=180, env=env
    )


def _one_clear_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stdout + out.stderr
    text = (out.stdout + out.stderr).strip()
    assert len(text.splitlines()) == 1, text
    assert "Traceback" not in text and text.startswith("error:"), text
    return text


def test_url_climbing_out_of_the_plate_is_refused(tmp_path):
    root, index = _harmony(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.tiff").write_bytes((root / "Images" / FIRST).read_bytes())
    _edit(index, f"<URL>{FIRST}</URL>", "<URL>../../outside/x.tiff</URL>")
    text = _one_clear_line(_plan(root))
    assert "Index.idx.xml" in text and "'../../outside/x.tiff'" in text
    assert "outside the plate folder" in text
    assert not (tmp_path / "plates" / "P1_hcs").exists()


@pytest.mark.parametrize("url", ["/etc/hostname", "C:\\Harmony\\x.tiff", "file:///etc/hostname"])
def test_absolute_url_is_refused(tmp_path, url):
    root, index = _harmony(tmp_path, "v7")
    _edit(index, f"<URL>{FIRST}</URL>", f"<URL>{url}</URL>")
    with pytest.raises(PlateError, match=r"Index\.xml: <URL> of <Image> 0101K1F1P1R1 .* absolute"):
        open_plate(str(root))


def test_plane_symlinked_outside_the_plate_is_refused(tmp_path):
    root, _ = _harmony(tmp_path)
    secret = tmp_path / "secret.tiff"
    plane = root / "Images" / FIRST
    secret.write_bytes(plane.read_bytes())
    plane.unlink()
    plane.symlink_to(secret)
    text = _one_clear_line(_plan(root))
    assert FIRST in text and "outside the plate folder" in text
    assert str(secret) not in text  # the message does not say where the link points


def test_symlink_to_etc_passwd_never_echoes_its_bytes(tmp_path):
    root, _ = _harmony(tmp_path)
    plane = root / "Images" / FIRST
    plane.unlink()
    plane.symlink_to("/etc/passwd")
    text = _one_clear_line(_plan(root))
    assert FIRST in text and "root:" not in text and "/etc/passwd" not in text


def test_a_text_file_posing_as_a_plane_is_not_echoed(tmp_path):
    root, _ = _harmony(tmp_path)
    (root / "Images" / FIRST).write_text("root:x:0:0:secret-line\n" * 4)
    text = _one_clear_line(_plan(root))
    assert FIRST in text and "not a TIFF" in text and "secret-line" not in text


def test_symlinks_inside_the_plate_are_fine(tmp_path):
    root, _ = _harmony(tmp_path)
    images = root / "Images"
    (images / "store").mkdir()
    (images / FIRST).rename(images / "store" / FIRST)
    (images / FIRST).symlink_to(images / "store" / FIRST)
    link = tmp_path / "linked-plate"
    link.symlink_to(root)  # the plate folder itself may be a link
    assert open_plate(str(link)).wells == ("A01", "A02")
    assert inside_root(__import__("fsspec").filesystem("file"), str(link), str(link / "Images"))


def test_zero_based_row_is_one_clear_error(tmp_path):
    root, index = _harmony(tmp_path)
    _edit(index, "<Row>1</Row>\n      <Col>1</Col>\n      <FieldID>", "<Row>0</Row>\n      <Col>1</Col>\n      <FieldID>")  # fmt: skip
    text = _one_clear_line(_plan(root))
    assert "Index.idx.xml" in text and "<Image> 0101K1F1P1R1" in text
    assert "row 0" in text and "count from 1" in text


def test_row_beyond_the_declared_plate_is_one_clear_error(tmp_path):
    root, index = _harmony(tmp_path)
    _edit(index, "<Row>1</Row>\n      <Col>2</Col>\n      <FieldID>", "<Row>9</Row>\n      <Col>2</Col>\n      <FieldID>")  # fmt: skip
    text = _one_clear_line(_plan(root))
    assert "well I02 (row 9, column 2)" in text and "declares 8 rows x 12 columns" in text


def test_cellvoyager_well_z99_on_a_96_well_plate(tmp_path):
    make_cellvoyager_plate(str(tmp_path), wells=["A01", "A02"], sites=1, channels=1, z=1, size=32)
    mlf = tmp_path / "MeasurementData.mlf"
    text = mlf.read_text()
    record = next(line for line in text.splitlines() if "_A02_T0001" in line)
    hostile = record.replace('bts:Column="2" bts:Row="1"', 'bts:Column="99" bts:Row="26"')
    mlf.write_text(text.replace(record, hostile.replace("_A02_", "_Z99_")))
    (tmp_path / "CV-Plate-0042_A02_T0001F001L01A01Z01C01.tif").rename(
        tmp_path / "CV-Plate-0042_Z99_T0001F001L01A01Z01C01.tif"
    )
    text = _one_clear_line(_plan(tmp_path))
    assert "MeasurementData.mlf" in text and "well Z99 (row 26, column 99)" in text
    assert "declares 8 rows x 12 columns" in text


def test_cellvoyager_record_naming_a_file_outside(tmp_path):
    plate = tmp_path / "cv"
    make_cellvoyager_plate(str(plate), wells=["A01"], sites=1, channels=1, z=1, size=32)
    name = "CV-Plate-0042_A01_T0001F001L01A01Z01C01.tif"
    (plate / name).rename(tmp_path / name)
    mlf = plate / "MeasurementData.mlf"
    mlf.write_text(mlf.read_text().replace(f">{name}<", f">../{name}<"))
    with pytest.raises(PlateError, match=r"MeasurementData\.mlf: record 1 .* outside the plate"):
        open_plate(str(plate))


def test_presence_is_checked_on_the_path_that_is_read(tmp_path):
    """A URL into a sub-folder whose file exists only at the top level is missing, not found."""
    root, index = _harmony(tmp_path)
    _edit(index, f"<URL>{FIRST}</URL>", f"<URL>sub/{FIRST}</URL>")
    (root / "Images" / "sub").mkdir()
    with pytest.raises(PlateError, match=rf"planes missing .*files: sub/{FIRST}"):
        open_plate(str(root))
    os.replace(root / "Images" / FIRST, root / "Images" / "sub" / FIRST)
    assert open_plate(str(root)).images[0].path.endswith(f"Images/sub/{FIRST}")


def test_docs_section_names_a_test_per_row():
    root = Path(__file__).resolve().parents[1]
    section = (
        (root / "docs" / "bad-input.md")
        .read_text()
        .split("## Plates that point outside themselves")[1]
    )
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    named = [row.rstrip(" |").rsplit("`", 2)[-2] for row in rows[1:]]
    assert len(named) == len(rows) - 1 >= 10
    assert all(callable(globals().get(name)) for name in named), named
