"""Compile-time physical metadata: what the plan freezes about pixel size, z spacing, time,
field placement, channel colours, absent and padded planes, and stitching positions.

The compiler calls these; the worker and the OME-Zarr writer only read what they froze into the
plan. Pure: no Prefect, no pixel I/O.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.formats.physical import (
    StageIndex,
    channel_color,
    field_offsets_px,
    field_offsets_um,
    stage_positions,
)

__all__ = [
    "AbsentPlane",
    "absent_by_well",
    "channel_names",
    "output_physical",
    "physical_warnings",
    "positions_bound",
    "site_positions_px",
    "stitch_metadata_problem",
]

#: (site, channel, z, timepoint) of a source plane the instrument did not acquire.
AbsentPlane = tuple[int, int, int, int]
_LISTED = 8


def channel_names(layout: PlateLayout, channels: tuple[int, ...]) -> tuple[str, ...]:
    """Display names: the handler's channel names, else the instrument's channel info, else chN."""
    out = []
    for c in channels:
        info = layout.channel_info.get(c)
        out.append(layout.channel_names.get(c) or (info.name if info else None) or f"ch{c}")
    return tuple(out)


def _colors(layout: PlateLayout, channels: tuple[int, ...], names: tuple[str, ...]) -> tuple:
    colors = []
    for i, (c, name) in enumerate(zip(channels, names, strict=True)):
        info = layout.channel_info.get(c)
        colors.append(channel_color(name, info.emission_nm if info else None, i))
    return tuple(colors)


def absent_by_well(layout: PlateLayout) -> dict[str, tuple[AbsentPlane, ...]]:
    """{well: ((site, channel, z, timepoint), ...)} of the planes listed in `layout.absent`."""
    out: dict[str, list[AbsentPlane]] = defaultdict(list)
    for key in layout.absent:
        out[key.well].append((key.site, key.channel, key.z, key.timepoint))
    return {w: tuple(sorted(v)) for w, v in sorted(out.items())}


def output_physical(
    layout: PlateLayout, wells: tuple[str, ...], sizes: dict[str, int], stage: StageIndex
) -> dict[str, Any]:
    """The physical fields of the `OutputPlan` for the output's (t, c, z, site) sizes.

    The z spacing and time interval are only claimed while the output keeps every z-plane and
    timepoint (a projection has no spacing); field translations only while every site is its
    own field (a stitched well is one field at the well origin) and the pixel size is known
    (translations in µm next to a scale in pixels would misplace the fields).
    """
    channels = layout.channels[: sizes["channel"]]
    names = channel_names(layout, channels)
    keep_z = sizes["z"] == len(layout.z_planes) > 1
    keep_t = sizes["timepoint"] == len(layout.timepoints) > 1
    translations: dict[str, tuple[tuple[float, float], ...]] = {}
    per_site = sizes["site"] == len(layout.sites)
    if per_site and len(layout.sites) > 1 and layout.pixel_size_um:
        for well in wells:
            offsets = field_offsets_um(layout, well, stage)
            if offsets is not None:
                translations[well] = offsets
    absent = absent_by_well(layout)
    return {
        "channel_names": names,
        "channel_colors": _colors(layout, channels, names),
        "z_spacing_um": layout.z_spacing_um if keep_z else None,
        "time_interval_s": layout.time_interval_s if keep_t else None,
        "field_translations_um": translations,
        "field_sites": layout.sites if per_site else (),
        "absent_planes": {w: absent[w] for w in wells if w in absent},
    }


def _plane_list(planes: list[tuple[int, int, int]]) -> str:
    shown = ", ".join(f"(c{c}, z{z}, t{t})" for c, z, t in planes[:_LISTED])
    more = f" and {len(planes) - _LISTED} more" if len(planes) > _LISTED else ""
    return shown + more


def physical_warnings(layout: PlateLayout, reads_source: bool) -> list[str]:
    """Plan warnings: unknown pixel size, absent planes a step reads, padded export planes."""
    warnings = []
    if layout.pixel_size_um is None:
        warnings.append(
            f"plate {layout.plate_id}: the pixel size is not recorded in its metadata; the "
            "OME-Zarr gets scale 1 per pixel and no spatial unit (nothing is assumed)"
        )
    if layout.absent and reads_source:
        planes = sorted({(k.channel, k.z, k.timepoint) for k in layout.absent})
        fields = len({(k.well, k.site) for k in layout.absent})
        warnings.append(
            f"plate {layout.plate_id}: {len(layout.absent)} plane(s) were not acquired "
            f"({len(planes)} (channel, z, timepoint) in {fields} field(s)) and are read as zeros: "
            f"{_plane_list(planes)}; they are listed as 'absent_planes' in each OME-Zarr field"
        )
    if layout.padded:
        listed = ", ".join(layout.padded[:_LISTED])
        more = f" and {len(layout.padded) - _LISTED} more" if len(layout.padded) > _LISTED else ""
        warnings.append(
            f"plate {layout.plate_id}: {len(layout.padded)} plane(s) are byte-identical padding "
            f"copies the export made of other planes, and are read as planes: {listed}{more}"
        )
    return warnings


def site_positions_px(
    layout: PlateLayout, well: str, stage: StageIndex
) -> list[list[float]] | None:
    """Nominal (y, x) top-left pixel of each site of a well from its stage position, or None."""
    offsets = field_offsets_px(layout, well, stage)
    return None if offsets is None else [[y, x] for y, x in offsets]


def _positions_known(layout: PlateLayout, stage: StageIndex) -> bool:
    return bool(layout.pixel_size_um) and all(
        (w, s) in stage for w in layout.wells for s in layout.sites
    )


def stitch_metadata_problem(
    layout: PlateLayout, name: str, sites_now: int, stage: StageIndex | None = None
) -> str | None:
    """Why a function placing tiles from stage positions or the grid cannot run, or None."""
    n_sites = len(layout.sites)
    if sites_now != n_sites:
        return (
            f"{name} needs the {n_sites} sites of the well, but {sites_now} reach this step "
            "(already stitched?)"
        )
    stage = stage_positions(layout) if stage is None else stage
    if n_sites == 1 or _positions_known(layout, stage):
        return None
    grid, overlap = layout.grid, layout.tile_overlap
    if grid is not None and overlap is not None and grid[0] * grid[1] == n_sites:
        return None
    lacks = "no pixel size" if layout.pixel_size_um is None else "no stage position for some field"
    return (
        f"{name} needs the fields' stage positions or the site grid to place tiles; the plate "
        f"has {lacks} and {'no' if grid is None else 'a mismatched'} site grid (sites: "
        f"{n_sites}). Remove the stitching step, or use a plate whose metadata has them"
    )


def positions_bound(
    kwargs: dict[str, Any],
    layout: PlateLayout,
    yx: tuple[int, int],
    stage: StageIndex | None = None,
) -> tuple[int, int] | None:
    """Upper bound of a canvas stitched from stage positions (None if positions are unknown).

    The nominal extent over the plate's wells, plus the maximal correction per tile.
    """
    stage = stage_positions(layout) if stage is None else stage
    if not _positions_known(layout, stage):
        return None
    shift = int(kwargs.get("max_shift", 20))
    height = width = 0
    for well in layout.wells:
        pos = site_positions_px(layout, well, stage) or [[0.0, 0.0]]
        for axis, size in ((0, yx[0]), (1, yx[1])):
            values = [p[axis] for p in pos]
            extent = math.ceil(max(values)) + size + 2 * shift * (_bands(values, size / 2) - 1)
            if axis == 0:
                height = max(height, extent)
            else:
                width = max(width, extent)
    return height, width


def _bands(values: list[float], tolerance: float) -> int:
    """Number of rows (or columns) of tiles: clusters of positions closer than `tolerance`."""
    count, last = 0, None
    for v in sorted(values):
        if last is None or v - last > tolerance:
            count += 1
        last = v
    return count
