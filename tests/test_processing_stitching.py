"""Stitching against a known answer: tiles cut from a synthetic canvas at jittered positions."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from prefect_hcs.processing import get_function
from prefect_hcs.processing.stitching import (
    assemble_tiles,
    compute_tile_positions,
    register_pair,
    stitch_tiles,
)


def synthetic_canvas(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Blurred 'cells' of random brightness on a smooth texture and a flat offset."""
    spots = np.zeros(shape, np.float64)
    n = shape[0] * shape[1] // 2500
    spots[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = rng.uniform(500, 2000, n)
    cells = ndi.gaussian_filter(spots, 3.0) * 30
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape), 8.0)
    return cells + texture / texture.std() * 50 + 300


def cut_tiles(
    canvas: np.ndarray,
    grid: tuple[int, int],
    tile: int,
    overlap: float,
    jitter: int,
    rng: np.random.Generator,
    noise: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Tiles (S, tile, tile) uint16 in raster order, and their true top-left corners (S, 2)."""
    rows, cols = grid
    step = int(round(tile * (1 - overlap)))
    tiles, truth = [], []
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        jy, jx = rng.integers(-jitter, jitter + 1, 2)
        y, x = jitter + 2 + r * step + jy, jitter + 2 + c * step + jx
        truth.append((y, x))
        tiles.append(canvas[y : y + tile, x : x + tile] + rng.normal(0, noise, (tile, tile)))
    return np.clip(tiles, 0, 65535).astype(np.uint16), np.array(truth, dtype=float)


@pytest.mark.parametrize(("grid", "tile", "seed"), [((2, 2), 512, 0), ((3, 3), 512, 1)])
def test_stitch_positions_and_image_match_truth(grid, tile, seed):
    rng = np.random.default_rng(seed)
    canvas = synthetic_canvas((grid[0] * tile + 20, grid[1] * tile + 20), rng)
    tiles, truth = cut_tiles(canvas, grid, tile, 0.1, 3, rng)
    second = (tiles // 2).astype(np.uint16)  # another channel, registered like the first
    stack = np.stack([tiles, second])  # (C, S, Y, X)

    out, special = stitch_tiles(stack, grid=grid, overlap=0.1)

    table = special["tile_positions"]
    assert [row["site"] for row in table] == list(range(1, grid[0] * grid[1] + 1))
    found = np.array([[row["y"], row["x"]] for row in table])
    expected = truth - truth.min(axis=0)
    assert np.abs(found - expected).max() <= 2.0, np.round(found - expected, 2)

    assert out.dtype == np.uint16 and out.ndim == 4 and out.shape[:2] == (2, 1)
    oy, ox = truth.min(axis=0).astype(int)
    height, width = out.shape[-2:]
    assert abs(height - (truth[:, 0].max() - oy + tile)) <= 1
    assert abs(width - (truth[:, 1].max() - ox + tile)) <= 1
    reference = canvas[oy : oy + height, ox : ox + width]
    inner = (slice(8, -8), slice(8, -8))  # tile borders may be uncovered by up to the jitter
    for channel, scale in ((0, 1.0), (1, 0.5)):
        got = out[channel, 0][inner].astype(float)
        corr = np.corrcoef(got.ravel(), reference[inner].ravel() * scale)[0, 1]
        assert corr > 0.99, f"channel {channel}: correlation {corr:.4f}"


def test_stitch_three_dims_and_blend_none():
    rng = np.random.default_rng(5)
    canvas = synthetic_canvas((300, 560), rng)
    tiles, truth = cut_tiles(canvas, (1, 2), 256, 0.15, 3, rng)
    out, special = stitch_tiles(tiles.astype(np.float32), grid=(1, 2), overlap=0.15, blend="none")
    assert out.ndim == 3 and out.shape[0] == 1 and out.dtype == np.float32
    found = np.array([[r["y"], r["x"]] for r in special["tile_positions"]])
    assert np.abs(found - (truth - truth.min(axis=0))).max() <= 2.0
    # with "none" the second tile is pasted verbatim
    y, x = np.rint(found[1]).astype(int)
    np.testing.assert_array_equal(out[0, y : y + 256, x : x + 256], tiles[1].astype(np.float32))


def test_registered_spec_runs_with_metadata_inputs():
    spec = get_function("stitch_tiles")
    rng = np.random.default_rng(2)
    canvas = synthetic_canvas((290, 290), rng)
    tiles, _ = cut_tiles(canvas, (2, 2), 140, 0.2, 2, rng)
    out, special = spec.func(tiles[np.newaxis], grid=(2, 2), overlap=0.2, max_shift=8)
    assert out.shape[:2] == (1, 1)
    assert set(special) == set(spec.special_outputs)


def test_register_pair_sign_and_bound():
    rng = np.random.default_rng(3)
    image = synthetic_canvas((200, 200), rng)
    a = image[50:150, 50:110]
    b = image[53:153, 48:108]  # b(p) = a(p + (3, -2))
    dy, dx, corr = register_pair(a, b, max_shift=10)
    assert (round(dy), round(dx)) == (3, -2) and corr > 0.99
    # a shift beyond the bound is not reported as a confident match
    far = image[70:170, 50:110]
    _, _, corr_far = register_pair(a, far, max_shift=5)
    assert corr_far < 0.3


def test_blank_tiles_fall_back_to_nominal_grid():
    rng = np.random.default_rng(4)
    tiles = rng.normal(300, 5, (4, 128, 128)).astype(np.float32)  # pure noise: nothing to match
    positions, pairs = compute_tile_positions(tiles, (2, 2), 0.1)
    assert all(p.correlation < 0.3 for p in pairs)
    nominal = np.array([[0, 0], [0, 115.2], [115.2, 0], [115.2, 115.2]])
    np.testing.assert_allclose(positions, nominal, atol=0.01)


def test_assemble_linear_blend_is_seamless_for_identical_content():
    tiles = np.full((2, 1, 4, 64, 64), 100.0)  # (extra, C, S, Y, X): leading axes kept
    positions = np.array([[0, 0], [0, 58], [58, 0], [58, 58]])
    canvas = assemble_tiles(tiles, positions, "linear", ramp=(6, 6))
    assert canvas.shape == (2, 1, 122, 122)
    np.testing.assert_allclose(canvas, 100.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("stack_shape", "grid", "overlap", "kwargs", "match"),
    [
        ((4, 32, 32), (3, 3), 0.1, {}, "expected 9 tiles"),
        ((4, 32, 32), (2, 2), 1.0, {}, "overlap"),
        ((1, 4, 32, 32), (2, 2), 0.1, {"reference_channel": 1}, "reference_channel"),
        ((4, 32, 32), (2, 2), 0.1, {"blend": "cubic"}, "blend"),
        ((32, 32), (1, 1), 0.1, {}, "expected"),
    ],
)
def test_stitch_input_errors(stack_shape, grid, overlap, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stitch_tiles(np.zeros(stack_shape, np.uint16), grid=grid, overlap=overlap, **kwargs)


def test_stitch_speed_2x2_512():
    rng = np.random.default_rng(6)
    canvas = synthetic_canvas((1044, 1044), rng)
    tiles, _ = cut_tiles(canvas, (2, 2), 512, 0.1, 3, rng)
    stitch_tiles(tiles, grid=(2, 2), overlap=0.1)
    start = time.perf_counter()
    stitch_tiles(tiles, grid=(2, 2), overlap=0.1)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"2x2 of 512^2 took {elapsed * 1000:.0f} ms"
