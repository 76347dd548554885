"""The synthetic plate writer: realistic, countable, deterministic, and true to its ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage import filters, measure

from prefect_hcs.formats import open_plate, read_plane
from prefect_hcs.testing.synthetic import make_plate, phenix_field_order, site_grid


@pytest.mark.parametrize(
    ("sites", "grid"),
    [(1, (1, 1)), (2, (1, 2)), (4, (2, 2)), (6, (2, 3)), (9, (3, 3)), (5, (1, 5))],
)
def test_site_grid(sites: int, grid: tuple[int, int]) -> None:
    assert site_grid(sites) == grid


def test_phenix_field_order_is_centre_first_snake() -> None:
    order = phenix_field_order(3, 3)
    assert order[0] == (1, 1)
    assert order[1:] == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert sorted(phenix_field_order(2, 3)) == [(r, c) for r in range(2) for c in range(3)]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("fmt", ["imagexpress", "phenix"])
def test_deterministic_for_a_seed(tmp_path: Path, fmt: str) -> None:
    kwargs = dict(format=fmt, wells=["A01", "B02"], sites=4, channels=2, z=2, size=48)
    make_plate(str(tmp_path / "a"), seed=7, **kwargs)
    make_plate(str(tmp_path / "b"), seed=7, **kwargs)
    make_plate(str(tmp_path / "c"), seed=8, **kwargs)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() != c.keys() if fmt == "imagexpress" else a != c  # GUIDs follow the seed


def test_ground_truth_schema_and_geometry(tmp_path: Path) -> None:
    truth = make_plate(
        str(tmp_path),
        format="imagexpress",
        wells=["A01", "A02", "B01", "B02"],
        sites=6,
        channels=2,
        z=3,
        size=128,
        overlap=0.1,
        seed=11,
    )
    assert json.loads((tmp_path / "ground_truth.json").read_text()) == truth
    for key, value in {
        "format": "imagexpress",
        "plate_name": "SynthPlate",
        "grid": [2, 3],
        "overlap": 0.1,
        "tile_size": 128,
        "channels": 2,
        "z": 3,
        "sites": 6,
        "seed": 11,
        "focus_plane": 2,
    }.items():
        assert truth[key] == value, key
    assert truth["pixel_size_um"] == pytest.approx(2.6)
    counts = {w: v["nuclei"] for w, v in truth["wells"].items()}
    assert len(set(counts.values())) > 1, counts  # counts vary between wells
    for well in truth["wells"].values():
        h, w = well["canvas_shape"]
        tiles = {int(s): p for s, p in well["tile_positions"].items()}
        nominal = {int(s): p for s, p in well["nominal_tile_positions"].items()}
        assert sorted(tiles) == [1, 2, 3, 4, 5, 6]
        step = truth["step_px"]
        for s, (y, x) in tiles.items():
            r, c = divmod(s - 1, 3)
            assert nominal[s] == [3 + r * step, 3 + c * step]
            assert abs(y - nominal[s][0]) <= 3 and abs(x - nominal[s][1]) <= 3
            assert 0 <= y <= h - 128 and 0 <= x <= w - 128
        centres = np.array(well["nuclei_centres"])
        assert len(centres) == well["nuclei"] > 0
        inside = [
            any(ty <= cy < ty + 128 and tx <= cx < tx + 128 for ty, tx in tiles.values())
            for cy, cx in centres
        ]
        assert all(inside)
        d = np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
        assert d[np.triu_indices(len(centres), 1)].min() >= 18.0 * 128 / 256 - 1e-6


def test_requested_nuclei_count(tmp_path: Path) -> None:
    truth = make_plate(
        str(tmp_path),
        format="phenix",
        wells=["A01", "A02"],
        sites=4,
        channels=1,
        z=1,
        size=64,
        nuclei_per_well=25,
    )
    assert [w["nuclei"] for w in truth["wells"].values()] == [25, 25]


def test_nuclei_are_countable_and_focus_is_in_the_middle(tmp_path: Path) -> None:
    truth = make_plate(
        str(tmp_path), format="phenix", wells=["C03"], sites=4, channels=2, z=3, size=256, seed=2
    )
    layout = open_plate(str(tmp_path))
    well = truth["wells"]["C03"]
    canvas = np.zeros(well["canvas_shape"], np.float32)
    sharpness = {}
    for ref in layout.images:
        plane = read_plane(str(tmp_path), ref).astype(np.float32)
        if ref.channel == 1 and ref.site == 1:
            sharpness[ref.z] = float(ndimage.laplace(plane).var())
        if ref.channel == 1 and ref.z == truth["focus_plane"]:
            y, x = well["tile_positions"][str(ref.site)]
            canvas[y : y + 256, x : x + 256] = plane
    assert max(sharpness, key=sharpness.get) == 2
    labels = measure.label(canvas > filters.threshold_otsu(canvas[canvas > 0]))
    assert abs(labels.max() - well["nuclei"]) <= max(2, 0.03 * well["nuclei"])
    # nuclei are 8-14 px across at 256 px tiles
    areas = np.array([r.area for r in measure.regionprops(labels)])
    diameters = 2 * np.sqrt(np.median(areas) / np.pi)
    assert 7 <= diameters <= 15
    # channel 2 is a dimmer signal around the nuclei
    ref1 = next(r for r in layout.images if (r.site, r.z, r.channel) == (1, 2, 1))
    ref2 = next(r for r in layout.images if (r.site, r.z, r.channel) == (1, 2, 2))
    nuc, cyto = read_plane(str(tmp_path), ref1), read_plane(str(tmp_path), ref2)
    assert np.percentile(cyto, 99.9) < np.percentile(nuc, 99.9)
    ring = ndimage.binary_dilation(nuc > filters.threshold_otsu(nuc), iterations=4)
    assert cyto[ring].mean() > 1.5 * cyto[~ring].mean()


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        make_plate(str(tmp_path), format="cv8000", wells=["A01"], sites=1, channels=1, z=1, size=64)
    with pytest.raises(ValueError, match="overlap"):
        make_plate(
            str(tmp_path),
            format="phenix",
            wells=["A01"],
            sites=1,
            channels=1,
            z=1,
            size=64,
            overlap=0.7,
        )
    with pytest.raises(ValueError, match="not a well id"):
        make_plate(str(tmp_path), format="phenix", wells=["A1x"], sites=1, channels=1, z=1, size=64)
