"""The one absent-vs-missing rule shared by every plate handler, and export padding detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest
import tifffile

from prefect_hcs.formats.completeness import find_padded, plane_completeness
from prefect_hcs.formats.layout import ImageRef, PlaneKey, PlateError


def _refs(
    wells=("B02", "C03"), sites=(1, 2), channels=(1, 2), zs=(1, 2, 3), ts=(1,), skip=lambda k: False
) -> list[ImageRef]:
    out = []
    for w in wells:
        for s in sites:
            for c in channels:
                for z in zs:
                    for t in ts:
                        if not skip((w, s, c, z, t)):
                            out.append(
                                ImageRef(
                                    well=w,
                                    site=s,
                                    channel=c,
                                    z=z,
                                    timepoint=t,
                                    path=f"/p/{w}_s{s}_w{c}_z{z}_t{t}.tif",
                                )
                            )
    return out


def test_complete_plate_has_nothing_absent() -> None:
    assert plane_completeness("plate", _refs()) == ()


def test_channel_at_a_single_plane_is_absent_not_missing() -> None:
    images = _refs(skip=lambda k: k[2] == 2 and k[3] > 1)
    absent = plane_completeness("plate", images)
    assert len(absent) == 2 * 2 * 2  # 4 fields x (channel 2 at z 2 and 3)
    assert {(a.channel, a.z, a.timepoint) for a in absent} == {(2, 2, 1), (2, 3, 1)}
    assert {(a.well, a.site) for a in absent} == {("B02", 1), ("B02", 2), ("C03", 1), ("C03", 2)}
    assert absent[0] == PlaneKey(well="B02", site=1, channel=2, z=2, timepoint=1)


def test_channel_only_at_some_timepoints_is_absent() -> None:
    images = _refs(zs=(1,), ts=(1, 2, 3), skip=lambda k: k[2] == 2 and k[4] != 1)
    absent = plane_completeness("plate", images)
    assert {(a.channel, a.z, a.timepoint) for a in absent} == {(2, 1, 2), (2, 1, 3)}


def test_projection_only_channel_is_absent_from_the_stack_given_the_axes() -> None:
    images = _refs(channels=(1, 2))
    absent = plane_completeness("plate", images, axes=((1, 2, 3), (1, 2, 3), (1,)))
    assert {(a.channel, a.z) for a in absent} == {(3, 1), (3, 2), (3, 3)}
    assert len(absent) == 4 * 3


def test_plane_missing_for_one_site_is_an_error_naming_it() -> None:
    images = _refs(skip=lambda k: k[:4] == ("C03", 2, 1, 3))
    with pytest.raises(PlateError) as err:
        plane_completeness("/data/plate1", images, hint=" (metadata /data/plate1/x.HTD)")
    message = str(err.value)
    assert "1 planes missing in /data/plate1" in message
    assert "(C03, 2, 1, 3, 1)" in message
    assert "x.HTD" in message and "\n" not in message


def test_whole_site_missing_in_one_well_is_an_error() -> None:
    images = _refs(skip=lambda k: k[:2] == ("B02", 2))
    with pytest.raises(PlateError, match=r"6 planes missing.*\(B02, 2, 1, 1, 1\)"):
        plane_completeness("plate", images)


def test_many_missing_are_capped_in_the_message() -> None:
    images = _refs(
        wells=("A01", "A02"), zs=tuple(range(1, 21)), skip=lambda k: k[0] == "A02" and k[2] == 1
    )
    with pytest.raises(PlateError, match="and 30 more"):
        plane_completeness("plate", images)


def test_duplicates_listed_metadata_and_empty_are_errors() -> None:
    images = _refs()
    with pytest.raises(PlateError, match="present more than once"):
        plane_completeness("plate", [*images, images[0].model_copy(update={"path": "/p/dup.tif"})])
    with pytest.raises(
        PlateError, match=r"listed in the metadata of plate do not exist: /p/gone\.tif"
    ):
        plane_completeness("plate", images, listed_missing=["/p/gone.tif"])
    with pytest.raises(PlateError, match="no images found in plate"):
        plane_completeness("plate", [])


def _tiff(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, compression="lzw", metadata=None)


def test_find_padded_real_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    refs = []
    for z in (1, 2, 3):
        for c in (1, 2):
            path = tmp_path / f"ZStep_{z}" / f"P_B02_s1_w{c}.tif"
            if c == 2 and z > 1:  # the export padded channel 2 with copies of its z=1 plane
                shutil.copyfile(tmp_path / "ZStep_1" / "P_B02_s1_w2.tif", path)
            else:
                _tiff(path, rng.integers(0, 4000, (64, 64), dtype=np.uint16))
            refs.append(ImageRef(well="B02", site=1, channel=c, z=z, timepoint=1, path=str(path)))
    # The same bytes in another well are not padding of this one.
    other = tmp_path / "ZStep_1" / "P_B03_s1_w2.tif"
    shutil.copyfile(tmp_path / "ZStep_1" / "P_B02_s1_w2.tif", other)
    refs.append(ImageRef(well="B03", site=1, channel=2, z=1, timepoint=1, path=str(other)))
    fs = fsspec.filesystem("file")
    padded = find_padded(fs, refs)
    assert padded == (
        str(tmp_path / "ZStep_2" / "P_B02_s1_w2.tif"),
        str(tmp_path / "ZStep_3" / "P_B02_s1_w2.tif"),
    )


def test_find_padded_same_size_different_pixels_is_not_padding(tmp_path: Path) -> None:
    refs = []
    for z in (1, 2):
        path = tmp_path / f"z{z}.tif"
        array = np.zeros((300, 300), dtype=np.uint16)  # > 64 KiB: heads equal, tails differ
        array[-1, -1] = z
        tifffile.imwrite(path, array, metadata=None)
        refs.append(ImageRef(well="A01", site=1, channel=1, z=z, timepoint=1, path=str(path)))
    sizes = {r.path: Path(r.path).stat().st_size for r in refs}
    assert sizes[refs[0].path] == sizes[refs[1].path]
    assert find_padded(fsspec.filesystem("file"), refs, sizes) == ()
