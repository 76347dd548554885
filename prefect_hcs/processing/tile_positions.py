"""Where the tiles of a well lie: nominal positions, their neighbours, and the refined positions.

Stage positions of a microscope are only nominal (a few pixels of jitter, backlash, drift), so the
nominal positions (from each field's stage position, or else a regular grid + overlap) are just the
starting point. Each pair of neighbouring tiles is registered on the strips where they should
overlap (`tile_registration.register_pair`), and the pairwise offsets are combined by weighted
least squares into one consistent set of positions (loops in the grid average out the errors;
contradictory pairs are dropped). Conventions as in `stitching`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .tile_registration import register_pair

__all__ = [
    "PairOffset",
    "check_grid",
    "check_nominal",
    "compute_tile_positions",
    "fields_overlap",
    "neighbour_pairs",
    "nominal_grid_positions",
    "overlap_ramp",
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


def nominal_grid_positions(
    grid: tuple[int, int], tile_shape: tuple[int, int], overlap: float
) -> np.ndarray:
    """Top-left (y, x) of each tile of a regular ``grid`` with fractional ``overlap``, row-major."""
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
        rows, cols = check_grid(grid, overlap)
        if tiles.shape[0] != rows * cols:
            raise ValueError(
                f"expected {rows * cols} tiles (grid {rows}x{cols}) as (S, Y, X), got {tiles.shape}"
            )
        nominal = nominal_grid_positions((rows, cols), tiles.shape[-2:], overlap)
    nominal = check_nominal(nominal, tiles.shape[0])
    tiles = tiles.astype(np.float32, copy=False)
    neighbours = neighbour_pairs(nominal, tiles.shape[-2:])
    measured = _measure_pairs(tiles, nominal, neighbours, max_shift)
    positions = _solve_positions(
        tiles.shape[0], measured, _anchor_priors(nominal, neighbours), min_correlation
    )
    return positions - positions.min(axis=0), measured


def check_nominal(nominal: Any, n: int) -> np.ndarray:
    """``nominal`` as an (n, 2) float array of finite positions (raises ValueError otherwise)."""
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


def check_grid(grid: Any, overlap: float) -> tuple[int, int]:
    """``grid`` as positive (rows, cols), with ``overlap`` checked to be in [0, 1) (ValueError)."""
    try:
        rows, cols = (int(v) for v in grid)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"grid must be (rows, cols), got {grid!r}") from exc
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be positive (rows, cols), got {grid!r}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
    return rows, cols


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
