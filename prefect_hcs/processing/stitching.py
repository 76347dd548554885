"""Tile stitching: register the tiles of one well against each other and assemble one canvas.

Stage positions of a microscope are only nominal (a few pixels of jitter, backlash, drift), so the
nominal positions (from each field's stage position, or else a regular grid + overlap) are just the
starting point. Each pair of neighbouring tiles is registered by
phase correlation on the strips where they should overlap, the pairwise offsets are combined by
weighted least squares into one consistent set of positions (loops in the grid average out the
errors; contradictory pairs are dropped), and every channel is assembled with those positions.

Conventions: positions are (y, x) of a tile's top-left pixel in canvas pixels (rows grow
downwards); with a grid, sites are in row-major raster order (site index i -> row i // cols,
column i % cols); with nominal positions, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import fft

from .normalize import cast_like
from .registry import register

__all__ = [
    "PairOffset",
    "assemble_tiles",
    "compute_tile_positions",
    "fields_overlap",
    "neighbour_pairs",
    "overlap_ramp",
    "register_pair",
    "stitch_tiles",
]

#: Weight of the nominal-offset constraints that keep tiles without a reliable pair in place.
_PRIOR_WEIGHT = 1e-3
#: A measured pair disagreeing with the global solution by more than this (px) is dropped.
_RESIDUAL_TOLERANCE = 2.0


@dataclass(frozen=True)
class PairOffset:
    """Measured offset of tile ``j`` relative to tile ``i`` (position_j - position_i)."""

    i: int
    j: int
    dy: float
    dx: float
    correlation: float  # Pearson correlation of the overlap after alignment, in [-1, 1]


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


def _nominal_positions(
    grid: tuple[int, int], tile_shape: tuple[int, int], overlap: float
) -> np.ndarray:
    rows, cols = grid
    step_y = tile_shape[0] * (1.0 - overlap)
    step_x = tile_shape[1] * (1.0 - overlap)
    idx = np.arange(rows * cols)
    return np.stack([(idx // cols) * step_y, (idx % cols) * step_x], axis=1)


def neighbour_pairs(nominal: np.ndarray, tile_shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(i, j), i < j, of tiles that overlap side by side at their nominal positions.

    A pair is horizontal when the tiles overlap in x and lie in the same row band (|dy| at most
    half a tile), vertical likewise; diagonal corner contacts are left out (their overlap is
    too small to register). Works for any arrangement: a full grid, a grid with a missing
    corner, Harmony's centre-first fields, irregular stage positions.
    """
    h, w = tile_shape
    pairs = []
    for i in range(len(nominal)):
        for j in range(i + 1, len(nominal)):
            dy, dx = np.abs(nominal[j] - nominal[i])
            horizontal = 0 < dx < w and dy <= h / 2
            vertical = 0 < dy < h and dx <= w / 2
            if horizontal or vertical:
                pairs.append((i, j))
    return pairs


def _overlap_strips(
    a: np.ndarray, b: np.ndarray, oy: int, ox: int
) -> tuple[np.ndarray, np.ndarray]:
    """The parts of tiles a and b that overlap when b sits at offset (oy, ox) from a."""
    h, w = a.shape
    strip_a = a[max(0, oy) : h + min(0, oy), max(0, ox) : w + min(0, ox)]
    strip_b = b[max(0, -oy) : h - max(0, oy), max(0, -ox) : w - max(0, ox)]
    return strip_a, strip_b


def _measure_pairs(
    tiles: np.ndarray, nominal: np.ndarray, pairs: list[tuple[int, int]], max_shift: int
) -> list[PairOffset]:
    """Register every neighbour pair on the strip where the tiles overlap nominally."""
    measured: list[PairOffset] = []
    for i, j in pairs:
        oy, ox = (int(v) for v in np.rint(nominal[j] - nominal[i]))
        strip_a, strip_b = _overlap_strips(tiles[i], tiles[j], oy, ox)
        if min(strip_a.shape) < 2:
            continue
        dy, dx, corr = register_pair(strip_a, strip_b, max_shift)
        measured.append(PairOffset(i, j, oy + dy, ox + dx, corr))
    return measured


def _solve_positions(
    n: int, pairs: list[PairOffset], priors: list[PairOffset], min_correlation: float
) -> np.ndarray:
    """Weighted least squares over pair constraints, tile 0 anchored at (0, 0).

    Measured pairs weigh by their correlation; the nominal offsets of all neighbour pairs enter
    with a tiny weight so tiles whose pairs were all rejected still follow their neighbours. The
    measured pair that contradicts the solution most is dropped and the system re-solved until all
    remaining pairs agree within `_RESIDUAL_TOLERANCE`.
    """
    if n == 1:
        return np.zeros((1, 2))
    good = [p for p in pairs if p.correlation >= min_correlation]
    while True:
        constraints = [(p, max(p.correlation, 0.05)) for p in good]
        constraints += [(p, _PRIOR_WEIGHT) for p in priors]
        a = np.zeros((len(constraints), n - 1))
        rhs = np.zeros((len(constraints), 2))
        for row, (p, weight) in enumerate(constraints):
            sw = np.sqrt(weight)
            if p.j > 0:
                a[row, p.j - 1] += sw
            if p.i > 0:
                a[row, p.i - 1] -= sw
            rhs[row] = sw * np.array([p.dy, p.dx])
        solution, *_ = np.linalg.lstsq(a, rhs, rcond=None)
        positions = np.vstack([np.zeros((1, 2)), solution])
        if not good:
            return positions
        residuals = [
            float(np.hypot(*(positions[p.j] - positions[p.i] - (p.dy, p.dx)))) for p in good
        ]
        worst = int(np.argmax(residuals))
        if residuals[worst] <= _RESIDUAL_TOLERANCE:
            return positions
        del good[worst]


def _anchor_priors(nominal: np.ndarray, pairs: list[tuple[int, int]]) -> list[PairOffset]:
    """Nominal-offset constraints for every neighbour pair, plus tile 0 for isolated tiles.

    A tile that overlaps no other tile is held at its nominal offset from tile 0, so the system
    stays determined however sparse the acquisition.
    """
    priors = [_nominal_offset(nominal, i, j) for i, j in pairs]
    linked = {k for pair in pairs for k in pair}
    for k in range(1, len(nominal)):
        if k not in linked:
            priors.append(_nominal_offset(nominal, 0, k))
    return priors


def _nominal_offset(nominal: np.ndarray, i: int, j: int) -> PairOffset:
    """Tile ``j`` at its nominal offset from tile ``i``, with no measured correlation."""
    dy, dx = nominal[j] - nominal[i]
    return PairOffset(i, j, float(dy), float(dx), 0.0)


def fields_overlap(nominal: np.ndarray, tile_shape: tuple[int, int]) -> bool:
    """True when every tile is linked to every other by a chain of overlapping neighbours."""
    return _is_connected(len(nominal), neighbour_pairs(np.asarray(nominal), tile_shape))


def _is_connected(n: int, pairs: list[tuple[int, int]]) -> bool:
    reached, frontier = {0}, [0]
    while frontier:
        k = frontier.pop()
        for i, j in pairs:
            for a, b in ((i, j), (j, i)):
                if a == k and b not in reached:
                    reached.add(b)
                    frontier.append(b)
    return len(reached) == n


def compute_tile_positions(
    tiles: np.ndarray,
    grid: tuple[int, int] | None = None,
    overlap: float | None = None,
    max_shift: int = 20,
    min_correlation: float = 0.3,
    *,
    nominal: np.ndarray | None = None,
) -> tuple[np.ndarray, list[PairOffset]]:
    """Positions (S, 2) of the top-left corners of ``tiles`` (S, Y, X), min corner at (0, 0).

    The starting point is ``nominal`` (S, 2) positions in pixels, typically from the stage
    positions of each field; without them, the regular ``grid`` with fractional ``overlap``
    (sites in row-major order). Also returns the measured pairs (for diagnostics). Pairs whose
    aligned overlap correlates below ``min_correlation`` are ignored (blank or featureless strips)
    and those tiles keep their nominal offsets.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 3:
        raise ValueError(f"expected tiles as (S, Y, X), got shape {tiles.shape}")
    if nominal is None:
        if grid is None or overlap is None:
            raise ValueError("need the tiles' nominal positions, or a grid and an overlap")
        rows, cols = _check_grid(grid, overlap)
        if tiles.shape[0] != rows * cols:
            raise ValueError(
                f"expected {rows * cols} tiles (grid {rows}x{cols}) as (S, Y, X), got {tiles.shape}"
            )
        nominal = _nominal_positions((rows, cols), tiles.shape[-2:], overlap)
    nominal = _check_nominal(nominal, tiles.shape[0])
    tiles = tiles.astype(np.float32, copy=False)
    neighbours = neighbour_pairs(nominal, tiles.shape[-2:])
    measured = _measure_pairs(tiles, nominal, neighbours, max_shift)
    positions = _solve_positions(
        tiles.shape[0], measured, _anchor_priors(nominal, neighbours), min_correlation
    )
    return positions - positions.min(axis=0), measured


def _check_nominal(nominal: Any, n: int) -> np.ndarray:
    try:
        array = np.asarray(nominal, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"nominal positions must be (S, 2) numbers, got {nominal!r}") from exc
    if array.shape != (n, 2) or not np.isfinite(array).all():
        raise ValueError(
            f"need one finite (y, x) nominal position per tile: {n} tiles, positions of shape "
            f"{array.shape}"
        )
    return array


def overlap_ramp(nominal: np.ndarray, tile_shape: tuple[int, int]) -> tuple[int, int]:
    """Blend ramp (rows, cols) in px: the widest nominal overlap between neighbours per axis."""
    h, w = tile_shape
    ramp_y = ramp_x = 1
    for i, j in neighbour_pairs(nominal, tile_shape):
        dy, dx = np.abs(nominal[j] - nominal[i])
        if dx >= dy:
            ramp_x = max(ramp_x, int(round(w - dx)))
        else:
            ramp_y = max(ramp_y, int(round(h - dy)))
    return ramp_y, ramp_x


def assemble_tiles(
    tiles: np.ndarray,
    positions: np.ndarray,
    blend: Literal["linear", "none"] = "linear",
    ramp: tuple[int, int] | None = None,
) -> np.ndarray:
    """Place tiles (..., S, Y, X) at integer-rounded ``positions`` (S, 2) -> (..., H, W) float32.

    "linear" feathers overlaps: each tile's weight ramps up linearly from its edges over ``ramp``
    = (rows, cols) px (default: half the tile, i.e. plain distance-to-edge feathering; pass the
    overlap width to keep tile interiors unblended), so seams fade instead of jumping. "none"
    pastes tiles in site order (later on top). Canvas pixels no tile covers are 0.
    """
    tiles = np.asarray(tiles)
    lead, (n, h, w) = tiles.shape[:-3], tiles.shape[-3:]
    pos = np.rint(np.asarray(positions, dtype=np.float64)).astype(int)
    pos -= pos.min(axis=0)
    height, width = int(pos[:, 0].max()) + h, int(pos[:, 1].max()) + w
    flat = tiles.reshape(-1, n, h, w)
    canvas = np.zeros((flat.shape[0], height, width), dtype=np.float32)
    if blend == "none":
        for s in range(n):
            y, x = pos[s]
            canvas[:, y : y + h, x : x + w] = flat[:, s]
        return canvas.reshape(*lead, height, width)
    if blend != "linear":
        raise ValueError(f"blend must be 'linear' or 'none', got {blend!r}")
    weights = np.zeros((height, width), dtype=np.float32)
    ramp_y = _edge_ramp(h, ramp[0] if ramp else h)
    ramp_x = _edge_ramp(w, ramp[1] if ramp else w)
    tile_weight = np.outer(ramp_y, ramp_x).astype(np.float32)
    for s in range(n):
        y, x = pos[s]
        canvas[:, y : y + h, x : x + w] += flat[:, s] * tile_weight
        weights[y : y + h, x : x + w] += tile_weight
    np.divide(canvas, weights, out=canvas, where=weights > 0)
    return canvas.reshape(*lead, height, width)


def _edge_ramp(size: int, length: int) -> np.ndarray:
    """Weights rising linearly from each edge over ``length`` px, then flat at 1 (never 0)."""
    length = max(1, min(int(length), size // 2))
    d = np.minimum(np.arange(size), np.arange(size)[::-1]) + 0.5
    return np.minimum(d / length, 1.0)


def _check_grid(grid: Any, overlap: float) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in grid)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"grid must be (rows, cols), got {grid!r}") from exc
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be positive (rows, cols), got {grid!r}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
    return rows, cols


def _check_stitch_kwargs(kwargs: dict[str, Any]) -> None:
    if kwargs["max_shift"] < 0:
        raise ValueError(f"max_shift: must be >= 0, got {kwargs['max_shift']}")
    if kwargs["reference_channel"] < 0:
        raise ValueError(f"reference_channel: must be >= 0, got {kwargs['reference_channel']}")
    if not -1.0 <= kwargs["min_correlation"] <= 1.0:
        raise ValueError(f"min_correlation: must be in [-1, 1], got {kwargs['min_correlation']}")


@register(
    "stitch_tiles",
    variable_components=("channel", "site"),
    metadata_inputs=("grid", "overlap", "site_positions_px"),
    special_outputs=("tile_positions",),
    validator=_check_stitch_kwargs,
    reduces=("site",),
)
def stitch_tiles(
    stack: np.ndarray,
    grid: tuple[int, int] | None = None,
    overlap: float | None = None,
    site_positions_px: Any = None,
    reference_channel: int = 0,
    max_shift: int = 20,
    blend: Literal["linear", "none"] = "linear",
    min_correlation: float = 0.3,
) -> tuple[np.ndarray, dict[str, list[dict[str, Any]]]]:
    """Stitch the sites of a well into one image per channel: (C, S, Y, X) -> (C, 1, H, W).

    The nominal tile positions come from ``site_positions_px`` (one (y, x) per site, in pixels,
    from the fields' stage positions: the plan provides them for every vendor that records
    positions, whatever the arrangement of the fields); without them, from the regular ``grid``
    and ``overlap`` of the plate metadata. Positions are refined once, on ``reference_channel``
    (index along axis 0), by phase correlation of every overlapping neighbour pair, and applied
    to all channels so they stay registered. ``max_shift`` bounds the correction (px) of each
    pair offset relative to the nominal one; pairs whose aligned overlap correlates below
    ``min_correlation`` fall back to the nominal offset. An (S, Y, X) stack is treated as one
    channel and returns (1, H, W). Special output "tile_positions": one row per site (1-based)
    with the float (y, x) of its top-left corner on the canvas (tiles are placed at the rounded
    positions).
    """
    stack = np.asarray(stack)
    if stack.ndim not in (3, 4):
        raise ValueError(f"expected (C, S, Y, X) or (S, Y, X), got shape {stack.shape}")
    tiles = stack if stack.ndim == 4 else stack[np.newaxis]
    if not 0 <= reference_channel < tiles.shape[0]:
        raise ValueError(
            f"reference_channel={reference_channel} but the stack has {tiles.shape[0]} channel(s)"
        )
    h, w = tiles.shape[-2:]
    if site_positions_px is not None:
        nominal = _check_nominal(site_positions_px, tiles.shape[1])
    elif grid is not None and overlap is not None:
        rows, cols = _check_grid(grid, overlap)
        nominal = _nominal_positions((rows, cols), (h, w), float(overlap))
    else:
        raise ValueError("the plate records neither stage positions nor a site grid")
    positions, _pairs = compute_tile_positions(
        tiles[reference_channel],
        grid,
        overlap,
        max_shift,
        min_correlation,
        nominal=None if site_positions_px is None else nominal,
    )
    canvas = assemble_tiles(tiles, positions, blend, overlap_ramp(nominal, (h, w)))  # (C, H, W)
    out = cast_like(canvas[:, np.newaxis], stack.dtype)
    if stack.ndim == 3:
        out = out[0]
    table = [
        {"site": s + 1, "y": round(float(y), 3), "x": round(float(x), 3)}
        for s, (y, x) in enumerate(positions)
    ]
    return out, {"tile_positions": table}
