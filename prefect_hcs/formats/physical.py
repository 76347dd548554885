"""Physical metadata for the output: field placement from stage positions, channel colours.

Pure functions over a `PlateLayout`; the compiler freezes their results into the plan, so no task
ever consults the layout. Knows nothing of Prefect.

**Stage axes.** Image columns grow with stage X on every supported instrument. Image rows grow
*downwards*; the stage Y of Harmony (Opera Phenix / Operetta) and CellVoyager grows *upwards*
(plate coordinates, as in their own viewers), while MetaXpress stage Y grows downwards, like rows.
`STAGE_Y_UP` lists the formats whose Y is flipped. Offsets are relative to the well's top-left-most
field: the field with the smallest X gets x = 0 and the top-most field gets y = 0, so every
translation is >= 0 and a viewer places the fields where the microscope took them.
"""

from __future__ import annotations

from prefect_hcs.formats.layout import PlateLayout

__all__ = [
    "STAGE_Y_UP",
    "channel_color",
    "field_offsets_um",
    "field_offsets_px",
    "stage_positions",
]

#: Plate formats whose stage Y grows upwards (towards lower image rows).
STAGE_Y_UP: frozenset[str] = frozenset({"phenix", "cellvoyager"})

#: (upper emission bound in nm, display colour): blue, green, red, then far red as magenta, the
#: colours users expect for DAPI/Hoechst, GFP/FITC/Alexa 488, Cy3/TRITC/mCherry/Alexa 568,
#: Cy5/Alexa 647 and beyond.
_EMISSION_COLORS: tuple[tuple[float, str], ...] = (
    (500.0, "0000FF"),
    (560.0, "00FF00"),
    (650.0, "FF0000"),
    (float("inf"), "FF00FF"),
)
_NAMED_COLORS: tuple[tuple[str, str], ...] = (
    ("dapi", "0000FF"),
    ("hoechst", "0000FF"),
    ("nuclei", "0000FF"),
    ("gfp", "00FF00"),
    ("fitc", "00FF00"),
    ("488", "00FF00"),
    ("tritc", "FF0000"),
    ("texasred", "FF0000"),
    ("texas red", "FF0000"),
    ("rfp", "FF0000"),
    ("mcherry", "FF0000"),
    ("568", "FF0000"),
    ("561", "FF0000"),
    ("cy3", "FF0000"),
    ("cy5", "FF00FF"),
    ("640", "FF00FF"),
    ("647", "FF00FF"),
)
_FALLBACK_COLORS = ("0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")


def channel_color(name: str, emission_nm: float | None, index: int) -> str:
    """Display colour (RRGGBB) of a channel: from its emission wavelength when the instrument
    recorded it, else from a well-known dye in its name, else a distinct colour by position."""
    if emission_nm is not None and emission_nm > 0:
        return next(color for bound, color in _EMISSION_COLORS if emission_nm < bound)
    low = name.lower()
    for key, color in _NAMED_COLORS:
        if key in low:
            return color
    return _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)]


#: {(well, site): (stage x, stage y) in µm}, built once per plate by `stage_positions`.
StageIndex = dict[tuple[str, int], tuple[float, float]]


def stage_positions(layout: PlateLayout) -> StageIndex:
    """Stage (x, y) in µm of every (well, site) that records one, in one pass over the planes.

    Same rule as `PlateLayout.field_position_um` (the first plane of the field that has a
    position), without its scan per call.
    """
    index: StageIndex = {}
    for ref in (*layout.images, *layout.projections):
        key = (ref.well, ref.site)
        if key not in index and ref.stage_x_um is not None:
            index[key] = (ref.stage_x_um, ref.stage_y_um or 0.0)
    return index


def field_offsets_um(
    layout: PlateLayout, well: str, stage: StageIndex | None = None
) -> tuple[tuple[float, float], ...] | None:
    """(y, x) in µm of each site of a well (in `layout.sites` order) relative to its
    top-left-most field.

    None when any site has no recorded stage position (no partial placement: a viewer would
    overlay the unplaced fields at the origin). Pass `stage` from `stage_positions` when calling
    this for many wells.
    """
    stage = stage_positions(layout) if stage is None else stage
    found = [stage.get((well, s)) for s in layout.sites]
    if not found or any(p is None for p in found):
        return None
    xs = [p[0] for p in found if p is not None]
    ys = [p[1] for p in found if p is not None]
    flip = layout.format in STAGE_Y_UP
    y0 = max(ys) if flip else min(ys)
    x0 = min(xs)
    return tuple(
        (round((y0 - y) if flip else (y - y0), 6), round(x - x0, 6))
        for x, y in zip(xs, ys, strict=True)
    )


def field_offsets_px(
    layout: PlateLayout, well: str, stage: StageIndex | None = None
) -> tuple[tuple[float, float], ...] | None:
    """`field_offsets_um` in pixels of the plate (None without stage positions or pixel size)."""
    offsets = field_offsets_um(layout, well, stage)
    px = layout.pixel_size_um
    if offsets is None or not px:
        return None
    return tuple((round(y / px, 3), round(x / px, 3)) for y, x in offsets)
