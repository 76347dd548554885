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

This module assembles the canvas and registers ``stitch_tiles``; pair registration is in
`tile_registration` and the positions in `tile_positions`. ``PairOffset``,
``compute_tile_positions``, ``fields_overlap``, ``neighbour_pairs``, ``overlap_ramp`` and
``register_pair`` are re-exported here, so ``from prefect_hcs.processing.stitching import ...``
keeps working.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .normalize import cast_like
from .registry import register

# Imported under their former private names so the source of `stitch_tiles` (what its
# code_version hashes for resume) is unchanged by the move.
from .tile_positions import (
    PairOffset,
    compute_tile_positions,
    fields_overlap,
    neighbour_pairs,
    overlap_ramp,
)
from .tile_positions import check_grid as _check_grid
from .tile_positions import check_nominal as _check_nominal
from .tile_positions import nominal_grid_positions as _nominal_positions
from .tile_registration import register_pair

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
