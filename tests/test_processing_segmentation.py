"""Nucleus counting against synthetic planes with a known number of nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from prefect_hcs.processing import get_function, validate_kwargs
from prefect_hcs.processing.segmentation import count_nuclei, segment_nuclei_labels


def nuclei_plane(
    n: int,
    rng: np.random.Generator,
    shape: tuple[int, int] = (512, 512),
    noise: float = 20.0,
    background: bool = True,
    min_gap: float = 22.0,
) -> tuple[np.ndarray, int]:
    """uint16 plane with up to ``n`` separated nuclei (8-14 px diameter, soft edges, blurred) on
    an uneven background (ramp + bump) with Gaussian noise; returns it and the true count."""
    centers = np.empty((0, 2))
    for c in rng.uniform(12, np.array(shape) - 12, size=(50 * n, 2)):
        if len(centers) == n:
            break
        if not len(centers) or np.hypot(*(centers - c).T).min() > min_gap:
            centers = np.vstack([centers, c])
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    img = np.zeros(shape)
    for c in centers:
        radius, amp = rng.uniform(4, 7), rng.uniform(400, 900)
        y0, y1 = int(c[0]) - 12, int(c[0]) + 13
        x0, x1 = int(c[1]) - 12, int(c[1]) + 13
        r = np.hypot(yy[y0:y1, x0:x1] - c[0], xx[y0:y1, x0:x1] - c[1])
        img[y0:y1, x0:x1] = np.maximum(img[y0:y1, x0:x1], amp / (1 + np.exp(r - radius)))
    img = ndi.gaussian_filter(img, 1.0)
    if background:
        img += 200 + 300 * xx / shape[1] + 150 * np.sin(yy / shape[0] * np.pi)
    img += rng.normal(0, noise, shape)
    return np.clip(img, 0, 65535).astype(np.uint16), len(centers)


@pytest.mark.parametrize(
    ("n", "seed", "kwargs"),
    [
        (40, 0, {}),
        (150, 1, {}),
        (300, 2, {}),
        (150, 3, {"threshold": "li"}),
        (150, 4, {"split_touching": False}),
    ],
)
def test_count_separated_nuclei(n, seed, kwargs):
    plane, true_count = nuclei_plane(n, np.random.default_rng(seed))
    stack = plane[np.newaxis]
    out, special = count_nuclei(stack, **kwargs)
    assert out is stack
    (row,) = special["measurements"]
    assert row["plane"] == 0
    assert abs(row["nuclei_count"] - true_count) <= max(1, 0.05 * true_count), row
    # 8-14 px diameter: areas ~50-155 px, plus the blurred rim a lower ("li") threshold takes in
    assert 50 <= row["mean_area_px"] <= 250
    assert row["total_area_px"] == pytest.approx(
        row["mean_area_px"] * row["nuclei_count"], rel=1e-3
    )
    assert row["mean_intensity"] > 400  # raw intensity inside nuclei is above the background


def test_touching_pairs_are_split():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:256, :256].astype(np.float64)
    img = np.zeros((256, 256))
    pairs = [(40, 40), (40, 140), (140, 40), (140, 140), (200, 200)]
    for k, (y, x) in enumerate(pairs):
        for dx in (0, 10 + k):  # centres 10-14 px apart, radius 6: touching or slightly merged
            r = np.hypot(yy - y, xx - x - dx)
            img = np.maximum(img, 600 / (1 + np.exp(r - 6)))
    img = ndi.gaussian_filter(img, 1.0) + 200 + rng.normal(0, 15, img.shape)
    stack = img.astype(np.uint16)[np.newaxis]
    assert count_nuclei(stack)[1]["measurements"][0]["nuclei_count"] == 10
    unsplit = count_nuclei(stack, split_touching=False)[1]["measurements"][0]["nuclei_count"]
    assert unsplit < 10


def test_multiple_planes_and_size_filters():
    rng = np.random.default_rng(8)
    planes = [nuclei_plane(n, rng, shape=(256, 256))[0] for n in (10, 30)]
    stack = np.stack(planes)[:, np.newaxis]  # (2, 1, Y, X): leading axes flattened to planes
    _, special = count_nuclei(stack)
    rows = special["measurements"]
    assert [r["plane"] for r in rows] == [0, 1]
    assert [r["nuclei_count"] for r in rows] == [10, 30]
    _, none_left = count_nuclei(stack, min_area=400)
    assert all(
        r["nuclei_count"] == 0 and r["mean_area_px"] is None for r in none_left["measurements"]
    )
    _, capped = count_nuclei(stack, max_area=20)  # everything is bigger than 20 px
    assert all(r["nuclei_count"] == 0 for r in capped["measurements"])


def test_empty_and_flat_planes():
    flat = np.full((1, 64, 64), 100, np.uint16)
    _, special = count_nuclei(flat)
    assert special["measurements"][0]["nuclei_count"] == 0
    _, special = count_nuclei(np.zeros((1, 64, 64), np.float32), threshold=10.0)
    assert special["measurements"][0]["nuclei_count"] == 0


def test_numeric_threshold_and_no_background_correction():
    plane, true_count = nuclei_plane(60, np.random.default_rng(9), background=False)
    _, special = count_nuclei(plane[np.newaxis], threshold=150.0, background_radius=None)
    assert special["measurements"][0]["nuclei_count"] == true_count


def test_segment_nuclei_labels_matches_count():
    plane, true_count = nuclei_plane(50, np.random.default_rng(10), shape=(256, 384))
    stack = np.stack([plane, plane[::-1]])
    labels = segment_nuclei_labels(stack)
    assert labels.dtype == np.uint32 and labels.shape == stack.shape
    for i in range(2):
        assert labels[i].max() == len(np.unique(labels[i])) - 1 == true_count
        assert count_nuclei(stack[i : i + 1])[1]["measurements"][0]["nuclei_count"] == true_count


def test_specs_and_validation():
    spec = get_function("count_nuclei")
    assert spec.special_outputs == ("measurements",)
    assert spec.parameters["threshold"].default == "otsu"
    validate_kwargs("count_nuclei", {"threshold": 0.5, "min_area": 10, "max_area": 200})
    with pytest.raises(TypeError, match="max_area: must be >= min_area"):
        validate_kwargs("count_nuclei", {"min_area": 50, "max_area": 10})
