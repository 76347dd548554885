"""The content of a synthetic well: nuclei, cytoplasm, a background gradient and camera noise.

Shared by every synthetic plate generator (`synthetic`, `synthetic_tiles`, `synthetic_imagexpress`)
so that every vendor's plate shows the same kind of scene: `place_nuclei` scatters non-touching
nuclei over the tiles' union, `render_signals` draws each channel's in-focus signal on the well's
canvas, and `tile_noise` turns a cut tile into a noisy uint16 plane. Every draw comes from the
caller's random generator, so a seeded plate is byte-identical from run to run.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["JITTER_PX", "place_nuclei", "render_signals", "tile_noise"]

#: Largest stage error (px) of a tile, in y and in x: true positions are nominal ± this.
JITTER_PX = 3


def place_nuclei(
    rng: np.random.Generator,
    rects: list[tuple[int, int, int]],
    shape: tuple[int, int],
    count: int,
    min_dist: float,
) -> np.ndarray:
    """Centres (y, x) inside the tiles' union, at least `min_dist` apart (grid-hashed rejection)."""
    cell = min_dist
    buckets: dict[tuple[int, int], list[tuple[float, float]]] = {}
    accepted: list[tuple[float, float]] = []
    batch = rng.uniform((0, 0), shape, size=(max(count * 60, 200), 2))
    for y, x in batch:
        if len(accepted) >= count:
            break
        if not any(ty <= y < ty + s and tx <= x < tx + s for ty, tx, s in rects):
            continue
        gy, gx = int(y // cell), int(x // cell)
        near = (
            p for dy in (-1, 0, 1) for dx in (-1, 0, 1) for p in buckets.get((gy + dy, gx + dx), ())
        )
        if any((y - py) ** 2 + (x - px) ** 2 < min_dist**2 for py, px in near):
            continue
        buckets.setdefault((gy, gx), []).append((y, x))
        accepted.append((y, x))
    return np.array(accepted, dtype=np.float64).reshape(-1, 2)


def _stamp(canvas: np.ndarray, y: float, x: float, a: float, b: float, theta: float, value: float):
    """Add a soft-edged filled ellipse (semi-axes a >= b, angle theta) to the canvas in place."""
    r = int(math.ceil(a)) + 2
    y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, canvas.shape[0])
    x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, canvas.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - y, xx - x
    c, s = math.cos(theta), math.sin(theta)
    u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
    d = np.sqrt(u * u + v * v)
    edge = np.clip((1.0 - d) * b, 0.0, 1.0)  # ~1 px anti-aliased rim
    canvas[y0:y1, x0:x1] += value * edge * (1.0 - 0.25 * d * d)


def render_signals(
    rng: np.random.Generator,
    canvas_shape: tuple[int, int],
    centres: np.ndarray,
    channels: int,
    scale: float,
) -> list[np.ndarray]:
    """In-focus signal (float32, background included) of each channel of one well."""
    h, w = canvas_shape
    nuc = np.zeros(canvas_shape, np.float32)
    mask = np.zeros(canvas_shape, np.float32)
    shapes = []
    for y, x in centres:
        a = rng.uniform(4.0, 7.0) * scale
        b = a * rng.uniform(0.65, 1.0)
        theta = rng.uniform(0, math.pi)
        shapes.append((y, x, a, b, theta))
        _stamp(nuc, y, x, a, b, theta, rng.uniform(6000, 14000))
        _stamp(mask, y, x, a, b, theta, 1.0)
    out = [ndimage.gaussian_filter(nuc, 0.8 * scale)]
    for _ in range(2, channels + 1):
        cyto = np.zeros(canvas_shape, np.float32)
        grow = rng.uniform(1.8, 2.4)
        for y, x, a, b, theta in shapes:
            _stamp(cyto, y, x, a * grow, b * grow, theta, rng.uniform(800, 2500))
        cyto = ndimage.gaussian_filter(cyto * (1.0 - 0.6 * np.clip(mask, 0, 1)), 2.0 * scale)
        out.append(cyto)
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    for i, signal in enumerate(out):
        base, gy, gx = rng.uniform(150, 400), rng.uniform(-120, 120), rng.uniform(-120, 120)
        signal += np.float32(base + (i == 0) * 50) + np.float32(gy) * yy + np.float32(gx) * xx
    return out


def tile_noise(rng: np.random.Generator, tile: np.ndarray) -> np.ndarray:
    """Shot noise (Gaussian approximation of Poisson) plus camera read noise, as uint16."""
    sigma = np.sqrt(np.maximum(tile, 0.0) + np.float32(64.0))
    noisy = tile + sigma * rng.standard_normal(tile.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)
