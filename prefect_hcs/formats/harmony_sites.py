"""Harmony fields to raster sites: Harmony numbers fields in acquisition order (centre first,
then a snake), which is useless for stitching, so sites are renumbered per well to row-major
raster order (site 1 = top-left) from the stage positions.

**Stage X increases to the right and stage Y increases upwards** (Harmony's plate coordinates;
``STAGE_Y_UP``), so the top row is the one with the largest PositionY. If the fields do not form
a full rectangular grid, sites are still ordered top-to-bottom, left-to-right but the grid and
overlap are None (with a warning).
"""

from __future__ import annotations

from typing import Any

STAGE_Y_UP = True


def _clusters(values: list[float], tol: float) -> list[float]:
    """Centres of 1-D clusters of positions closer than `tol` (sorted ascending)."""
    groups: list[list[float]] = []
    for v in sorted(values):
        if groups and v - groups[-1][-1] <= tol:
            groups[-1].append(v)
        else:
            groups.append([v])
    return [sum(g) / len(g) for g in groups]


def raster_sites(
    positions: dict[int, tuple[float, float]], tile_um: float | None
) -> tuple[dict[int, int], tuple[int, int] | None, tuple[float | None, float | None]]:
    """{field: raster site}, (rows, cols) and the (y, x) step in µm of one well's fields.

    Fields are clustered into rows (by Y, top = largest Y when STAGE_Y_UP) and columns (by X).
    """
    xs = [p[0] for p in positions.values()]
    ys = [p[1] for p in positions.values()]
    spread = max(max(xs) - min(xs), max(ys) - min(ys))
    tol = 0.25 * tile_um if tile_um else max(spread / (4 * len(positions)), 1e-6)
    col_centres = _clusters(xs, tol)
    row_centres = _clusters(ys, tol)
    if STAGE_Y_UP:
        row_centres = row_centres[::-1]

    def nearest(centres: list[float], v: float) -> int:
        return min(range(len(centres)), key=lambda i: abs(centres[i] - v))

    cells = {
        f: (nearest(row_centres, y), nearest(col_centres, x)) for f, (x, y) in positions.items()
    }
    rows, cols = len(row_centres), len(col_centres)
    if len(set(cells.values())) == len(cells) == rows * cols:
        mapping = {f: r * cols + c + 1 for f, (r, c) in cells.items()}
        step_y = abs(row_centres[-1] - row_centres[0]) / (rows - 1) if rows > 1 else None
        step_x = abs(col_centres[-1] - col_centres[0]) / (cols - 1) if cols > 1 else None
        return mapping, (rows, cols), (step_y, step_x)
    order = sorted(
        positions, key=lambda f: (nearest(row_centres, positions[f][1]), positions[f][0])
    )
    return {f: i + 1 for i, f in enumerate(order)}, None, (None, None)


def remap_fields(
    records: list[dict[str, Any]],
    tile_um: float | None,
    shape: tuple[int, int],
    pixel_um: float | None,
    warnings: list[str],
) -> tuple[dict[tuple[int, int, int], int], tuple[int, int] | None, float | None]:
    """Raster site of every (row, col, field), the common grid and the overlap fraction."""
    wells: dict[tuple[int, int], dict[int, tuple[float, float] | None]] = {}
    for r in records:
        pos = (r["x"], r["y"]) if r["x"] is not None and r["y"] is not None else None
        wells.setdefault((r["row"], r["col"]), {}).setdefault(r["field"], pos)
    if any(p is None for fields in wells.values() for p in fields.values()):
        warnings.append(
            "fields lack PositionX/PositionY: sites keep Harmony's field numbers, "
            "no grid is reported"
        )
        site_of: dict[tuple[int, int, int], int] = {
            (rc[0], rc[1], f): f for rc, fields in wells.items() for f in fields
        }
        return site_of, None, None
    site_of = {}
    grids = set()
    steps: tuple[float | None, float | None] = (None, None)
    for (row, col), fields in sorted(wells.items()):
        mapping, grid, well_steps = raster_sites(fields, tile_um)  # type: ignore[arg-type]
        grids.add(grid)
        if steps == (None, None):
            steps = well_steps
        site_of.update({(row, col, f): s for f, s in mapping.items()})
    if len(grids) != 1 or None in grids:
        warnings.append(
            "the fields do not form the same full rectangular grid in every well "
            f"(grids found: {sorted(map(str, grids))}); sites are ordered top-left first but no "
            "grid or overlap is reported"
        )
        return site_of, None, None
    grid = grids.pop()
    estimates = [
        1.0 - step / (extent * pixel_um)
        for step, extent in zip(steps, shape, strict=True)
        if step is not None and pixel_um
    ]
    if not estimates:
        return site_of, grid, None
    overlap = round(sum(estimates) / len(estimates), 4)
    if overlap < 0:
        warnings.append(f"fields do not touch (gap of {-overlap:.1%} of a tile); overlap set to 0")
        overlap = 0.0
    return site_of, grid, overlap
