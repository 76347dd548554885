"""Pairwise tile registration: the shift between two overlapping strips, by phase correlation.

The building block of stitching (`tile_positions` registers every neighbour pair with it):
phase correlation proposes a few candidate shifts, each is refined on the Pearson correlation
of the actual overlap, and the best one is returned with a sub-pixel fit.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

__all__ = ["register_pair"]


def _hann(shape: tuple[int, int]) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)


def _parabolic(values: np.ndarray, k: int) -> float:
    """Sub-pixel offset of a peak at index ``k`` from a parabola through its two neighbours."""
    if k <= 0 or k >= len(values) - 1:
        return 0.0
    left, mid, right = values[k - 1], values[k], values[k + 1]
    denom = left - 2 * mid + right
    return float(0.5 * (left - right) / denom) if denom < 0 else 0.0


def _overlap_correlation(a: np.ndarray, b: np.ndarray, sy: int, sx: int) -> float:
    """Pearson correlation of b(p) and a(p + s) over their common pixels."""
    h, w = a.shape
    ys, xs = slice(max(0, -sy), min(h, h - sy)), slice(max(0, -sx), min(w, w - sx))
    bb = b[ys, xs]
    aa = a[ys.start + sy : ys.stop + sy, xs.start + sx : xs.stop + sx]
    if bb.size < 16:
        return 0.0
    aa = aa - aa.mean()
    bb = bb - bb.mean()
    denom = float(np.sqrt((aa * aa).sum() * (bb * bb).sum()))
    return float((aa * bb).sum() / denom) if denom > 0 else 0.0


def _lowpass(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian low-pass (spatial sigma in px) for an rfft2 spectrum of ``shape``."""
    fy = fft.fftfreq(shape[0])[:, np.newaxis]
    fx = fft.rfftfreq(shape[1])[np.newaxis, :]
    return np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2)).astype(np.float32)


def _local_maxima(surface: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Indices of the ``count`` highest 3x3 local maxima of ``surface``, best first."""
    padded = np.pad(surface, 1, mode="constant", constant_values=-np.inf)
    neighbours = np.lib.stride_tricks.sliding_window_view(padded, (3, 3)).max(axis=(-2, -1))
    ys, xs = np.nonzero(surface >= neighbours)
    order = np.argsort(surface[ys, xs])[::-1][:count]
    return [(int(ys[k]), int(xs[k])) for k in order]


def _refine_by_correlation(
    a: np.ndarray, b: np.ndarray, start: tuple[int, int], bounds: tuple[int, int]
) -> tuple[int, int, float]:
    """Hill-climb the overlap correlation from ``start`` over integer shifts within ``bounds``."""
    cache: dict[tuple[int, int], float] = {}

    def score(s: tuple[int, int]) -> float:
        if abs(s[0]) > bounds[0] or abs(s[1]) > bounds[1]:
            return -np.inf
        if s not in cache:
            cache[s] = _overlap_correlation(a, b, *s)
        return cache[s]

    best = start
    for _ in range(4 * (bounds[0] + bounds[1]) + 1):
        around = [(best[0] + dy, best[1] + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        top = max(around, key=score)
        if top == best:
            break
        best = top
    return best[0], best[1], score(best)


def register_pair(
    a: np.ndarray, b: np.ndarray, max_shift: int, candidates: int = 3
) -> tuple[float, float, float]:
    """Shift s = (dy, dx) with b(p) ~= a(p + s), |s| <= max_shift, and its overlap correlation.

    Phase correlation (whitened cross-power spectrum, Hann window against edge effects, mild
    Gaussian low-pass so pixel noise cannot dominate the whitened spectrum) proposes the best
    ``candidates`` peaks; each is refined by hill-climbing the Pearson correlation of the actual
    overlap, and the best-correlating one wins, with a parabolic sub-pixel fit. Peaks are only
    searched within the bound (also capped below half the strip size, where circular correlation
    aliases), so a spurious maximum far away cannot win on a low-texture strip. A result on the
    bound is reported with correlation 0, since the true peak probably lies beyond it.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two 2-D strips of equal shape, got {a.shape} and {b.shape}")
    h, w = a.shape
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    window = _hann((h, w))
    fa = fft.rfft2((a - a.mean()) * window)
    fb = fft.rfft2((b - b.mean()) * window)
    cross = fa * np.conj(fb)
    cross /= np.maximum(np.abs(cross), 1e-12 * np.abs(cross).max() + 1e-30)
    cross *= _lowpass((h, w), 1.0)
    surface = fft.fftshift(fft.irfft2(cross, s=(h, w)))
    my = max(0, min(int(max_shift), h // 2 - 1))
    mx = max(0, min(int(max_shift), w // 2 - 1))
    cy, cx = h // 2, w // 2
    sub = surface[cy - my : cy + my + 1, cx - mx : cx + mx + 1]
    best = (0, 0, -np.inf)
    for iy, ix in _local_maxima(sub, candidates):
        found = _refine_by_correlation(a, b, (iy - my, ix - mx), (my, mx))
        if found[2] > best[2]:
            best = found
    sy, sx, corr = best
    if (my > 0 and abs(sy) == my) or (mx > 0 and abs(sx) == mx) or not np.isfinite(corr):
        return float(sy), float(sx), 0.0
    fy = _parabolic(np.array([_overlap_correlation(a, b, sy + d, sx) for d in (-1, 0, 1)]), 1)
    fx = _parabolic(np.array([_overlap_correlation(a, b, sy, sx + d) for d in (-1, 0, 1)]), 1)
    return sy + fy, sx + fx, corr
