"""What a plate handler found, as plain data for `plan` (table and ``--json``) and artifacts.

Built only from `PlateLayout` fields, so every vendor is reported the same way. Sizes stay small
whatever the plate: site positions are those of the first well (the grid repeats per well), absent
planes are summarised by (channel, z, timepoint), padded files are counted with a few examples.
"""

from __future__ import annotations

from typing import Any

from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.formats.physical import stage_positions

__all__ = ["layout_lines", "layout_report"]

_EXAMPLES = 5


def _sites(layout: PlateLayout) -> list[dict[str, Any]]:
    """Stage position of each site of the first well (one pass over the planes)."""
    well = layout.wells[0] if layout.wells else None
    stage = stage_positions(layout) if well else {}
    out = []
    for site in layout.sites:
        pos = stage.get((well, site)) if well else None
        out.append({"site": site, "x_um": pos[0] if pos else None, "y_um": pos[1] if pos else None})
    return out


def _channels(layout: PlateLayout) -> list[dict[str, Any]]:
    listed = sorted(set(layout.channels) | {p.channel for p in layout.projections})
    out = []
    for c in listed:
        info = layout.channel_info.get(c)
        out.append(
            {
                "channel": c,
                "name": info.name if info else layout.channel_names.get(c),
                "emission_nm": info.emission_nm if info else None,
                "excitation_nm": info.excitation_nm if info else None,
                "in_stack": c in layout.channels,
            }
        )
    return out


def layout_report(layout: PlateLayout) -> dict[str, Any]:
    """JSON-safe summary of a layout: vendor, axes, physical metadata, projections, gaps."""
    absent = sorted({(a.channel, a.z, a.timepoint) for a in layout.absent})
    return {
        "vendor": layout.format,
        "variant": layout.variant,
        "plate_barcode": layout.plate_barcode,
        "wells": list(layout.wells),
        "sites": _sites(layout),
        "grid": list(layout.grid) if layout.grid else None,
        "tile_overlap": layout.tile_overlap,
        "channels": _channels(layout),
        "z": {"count": len(layout.z_planes), "spacing_um": layout.z_spacing_um},
        "timepoints": {"count": len(layout.timepoints), "interval_s": layout.time_interval_s},
        "pixel_size_um": layout.pixel_size_um,
        "objective": layout.objective,
        "image_shape": list(layout.image_shape),
        "dtype": layout.dtype,
        "projections": {
            "count": len(layout.projections),
            "channels": sorted({p.channel for p in layout.projections}),
            "methods": sorted({p.projection or "unspecified" for p in layout.projections}),
        },
        "absent": {"count": len(layout.absent), "channel_z_t": [list(a) for a in absent]},
        "padded": {"count": len(layout.padded), "examples": list(layout.padded[:_EXAMPLES])},
    }


def _num(value: float | None, unit: str) -> str:
    return "not recorded" if value is None else f"{value:g} {unit}"


def layout_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows of a `layout_report` for a two-column table."""
    wells = report["wells"]
    shown = ", ".join(wells[:8]) + (f" … ({len(wells)} wells)" if len(wells) > 8 else "")
    sites = report["sites"]
    where = "; ".join(
        f"{s['site']}: ({s['x_um']:g}, {s['y_um']:g})"
        if s["x_um"] is not None
        else f"{s['site']}: -"
        for s in sites[:9]
    )
    channels = ", ".join(
        f"{c['channel']}={c['name'] or '?'}"
        + (f" ({c['emission_nm']:g} nm)" if c["emission_nm"] else "")
        + ("" if c["in_stack"] else " (projection only)")
        for c in report["channels"]
    )
    proj = report["projections"]
    absent, padded = report["absent"], report["padded"]
    grid = "x".join(map(str, report["grid"])) if report["grid"] else "none"
    return [
        ("vendor", f"{report['vendor']} ({report['variant'] or 'variant not recorded'})"),
        ("wells", shown),
        ("sites", f"{len(sites)} (grid {grid}); stage µm of the first well: {where or '-'}"),
        ("channels", channels),
        ("z", f"{report['z']['count']} planes, spacing {_num(report['z']['spacing_um'], 'µm')}"),
        (
            "timepoints",
            f"{report['timepoints']['count']}, interval "
            f"{_num(report['timepoints']['interval_s'], 's')}",
        ),
        ("pixel size", _num(report["pixel_size_um"], "µm")),
        ("objective", report["objective"] or "not recorded"),
        (
            "projections",
            f"{proj['count']} (channels {proj['channels']}, {', '.join(proj['methods'])})"
            if proj["count"]
            else "none",
        ),
        (
            "absent planes",
            f"{absent['count']} (channel, z, t): {absent['channel_z_t'][:10]}"
            if absent["count"]
            else "none",
        ),
        ("padded copies", f"{padded['count']}" if padded["count"] else "none"),
    ]
