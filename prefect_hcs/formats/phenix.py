"""PerkinElmer/Revvity Opera Phenix and Operetta CLS plates (Harmony export).

Layout: ``<plate>/Images/Index.idx.xml`` (or ``Index.xml``, in the plate folder or ``Images/``) plus
flat ``Images/r01c01f01p01-ch1sk1fk1fl1.tiff`` files. The XML index is the truth for what exists:
each ``<Images><Image>`` gives the file URL, Row, Col, FieldID, PlaneID, ChannelID, TimepointID,
PositionX/Y (metres) and ImageResolutionX (metres per pixel).

Field remapping: Harmony numbers fields in acquisition order (centre first, then a snake), which
is useless for stitching. Sites are renumbered per well to row-major raster order (site 1 =
top-left) from the stage positions. **Stage X increases to the right and stage Y increases
upwards** (Harmony's plate coordinates; ``STAGE_Y_UP``), so the top row is the one with the
largest PositionY. The synthetic writer uses the same convention. If the fields do not form a
full rectangular grid, sites are still ordered top-to-bottom, left-to-right but ``grid`` and
``tile_overlap`` are None (with a warning).

Problems: a malformed XML or a missing required element is a PlateError naming the file and
element; images listed but absent on disk, or holes in the (well, site, channel, z, timepoint)
grid, are a PlateError listing them; TIFFs in ``Images/`` that the index does not list (parseable
or not) are reported in ``layout.warnings``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.detect import (
    PHENIX_INDEX_NAMES,
    check_complete,
    display,
    list_names,
    listed,
    plate_sort_key,
    read_tiff_header,
    resolve,
)
from prefect_hcs.formats.layout import ImageRef, PlateError, PlateLayout, split_well, well_id

STAGE_Y_UP = True
# OpenHCS's Opera Phenix regex (row, column, field, plane, channel, sk = timepoint).
FILENAME_RE = re.compile(
    r"^r(\d{1,2})c(\d{1,2})f(\d+)p(\d+)-ch(\d+)(?:sk(\d+))?(?:fk\d+)?(?:fl\d+)?(?:_.*?)?\.(tiff?)$",
    re.IGNORECASE,
)
_REQUIRED = ("URL", "Row", "Col", "FieldID", "PlaneID", "ChannelID")
_TO_UM = {"m": 1e6, "mm": 1e3, "um": 1.0, "µm": 1.0, "nm": 1e-3}


def find_index(fs: AbstractFileSystem, root: str) -> str | None:
    """Path of the Harmony index (``Images/`` first, then the plate folder), or None."""
    for folder in (f"{root}/Images", root):
        names = list_names(fs, folder)
        for candidate in PHENIX_INDEX_NAMES:
            if names.get(candidate) == "file":
                return f"{folder}/{candidate}"
    return None


def _local(tag: str) -> str:
    """Tag name without its XML namespace (Harmony V5, V6, ... all look the same to us)."""
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _length_um(element: ET.Element | None, where: str, what: str) -> float | None:
    """A length element (``Unit="m"`` by default, as Harmony writes) in micrometres."""
    if element is None or not (element.text or "").strip():
        return None
    unit = element.get("Unit", "m").strip()
    try:
        return float(element.text) * _TO_UM[unit]
    except (ValueError, KeyError):
        raise PlateError(
            f"malformed Harmony index {where}: {what} <{_local(element.tag)}> is "
            f"{element.text!r} with Unit={unit!r} (expected a number in m, mm, um or nm)"
        ) from None


def parse_index(data: bytes, where: str) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Image records and {channel: name} of a Harmony index, with clear errors for bad XML."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, column = exc.position
        raise PlateError(
            f"malformed Harmony index {where}: XML error at line {line}, column {column} "
            f"({str(exc).split(':')[0]})"
        ) from None
    if _local(root.tag) != "EvaluationInputData":
        raise PlateError(
            f"not a Harmony index: {where} has root element <{_local(root.tag)}>, "
            "expected <EvaluationInputData>"
        )
    images_el = _child(root, "Images")
    if images_el is None:
        raise PlateError(f"malformed Harmony index {where}: no <Images> element")
    names: dict[int, str] = {}
    for entry in root.iter():
        if _local(entry.tag) == "Entry" and entry.get("ChannelID", "").isdigit():
            name_el = _child(entry, "ChannelName")
            if name_el is not None and name_el.text:
                names.setdefault(int(entry.get("ChannelID")), name_el.text.strip())
    records = []
    for n, image in enumerate((c for c in images_el if _local(c.tag) == "Image"), 1):
        records.append(_image_record(image, n, where, names))
    if not records:
        raise PlateError(f"malformed Harmony index {where}: <Images> lists no <Image>")
    return records, names


def _image_record(image: ET.Element, n: int, where: str, names: dict[int, str]) -> dict[str, Any]:
    fields = {_local(c.tag): c for c in image}
    ident = (fields["id"].text or "").strip() if "id" in fields else f"#{n}"
    label = f"<Image> {ident} (entry {n} of <Images>)"
    missing = [k for k in _REQUIRED if k not in fields or not (fields[k].text or "").strip()]
    if missing:
        raise PlateError(
            f"malformed Harmony index {where}: {label} lacks {', '.join(f'<{k}>' for k in missing)}"
        )
    record: dict[str, Any] = {"url": fields["URL"].text.strip(), "label": label}
    for key, name in (
        ("row", "Row"),
        ("col", "Col"),
        ("field", "FieldID"),
        ("plane", "PlaneID"),
        ("channel", "ChannelID"),
        ("timepoint", "TimepointID"),
    ):
        text = (fields[name].text or "").strip() if name in fields else "1"
        try:
            record[key] = int(text)
        except ValueError:
            raise PlateError(
                f"malformed Harmony index {where}: {label} has <{name}>{text}</{name}>, "
                "expected an integer"
            ) from None
    record["x"] = _length_um(fields.get("PositionX"), where, label)
    record["y"] = _length_um(fields.get("PositionY"), where, label)
    record["pixel_um"] = _length_um(fields.get("ImageResolutionX"), where, label)
    size = fields.get("ImageSizeX")
    record["width"] = int(size.text) if size is not None and (size.text or "").isdigit() else None
    if "ChannelName" in fields and fields["ChannelName"].text:
        names.setdefault(record["channel"], fields["ChannelName"].text.strip())
    return record


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


def _plate_id(root: str) -> str:
    parts = [p for p in root.split("/") if p]
    if len(parts) >= 2 and parts[-1].lower() == "images":
        return parts[-2]
    return parts[-1] if parts else "plate"


def open_phenix(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    fs: AbstractFileSystem | None = None,
) -> PlateLayout:
    """Discover an Opera Phenix / Operetta plate from its Harmony index, fields in raster order."""
    fs, root = resolve(url, storage_options, fs)
    where = display(fs, root)
    index_path = find_index(fs, root)
    if index_path is None:
        raise PlateError(
            f"not an Opera Phenix/Operetta plate: no Index.idx.xml or Index.xml in {where} "
            f"or {where}/Images. Harmony writes it next to the images in Images/."
        )
    index_name = display(fs, index_path)
    with fs.open(index_path, "rb") as fh:
        records, names = parse_index(fh.read(), index_name)
    folder = index_path.rsplit("/", 1)[0]
    on_disk = {n for n, kind in list_names(fs, folder).items() if kind == "file"}
    warnings: list[str] = []

    for key in ("field", "plane", "channel", "timepoint"):  # some exports count from 0
        if min(r[key] for r in records) == 0:
            for r in records:
                r[key] += 1
    absent = [r for r in records if r["url"].rsplit("/", 1)[-1] not in on_disk]
    present = [r for r in records if r["url"].rsplit("/", 1)[-1] in on_disk]
    in_index = {r["url"].rsplit("/", 1)[-1] for r in records}
    extra = sorted(n for n in on_disk - in_index if n.lower().endswith((".tif", ".tiff")))
    unparsed = [n for n in extra if not FILENAME_RE.match(n)]
    unlisted = [n for n in extra if FILENAME_RE.match(n)]
    if unparsed:
        warnings.append(
            f"{len(unparsed)} TIFF name(s) in {display(fs, folder)} not understood and ignored "
            f"(expected 'r01c01f01p01-ch1sk1fk1fl1.tiff'): {listed(unparsed)}"
        )
    if unlisted:
        warnings.append(
            f"{len(unlisted)} TIFF(s) in {display(fs, folder)} are not listed in {index_name} and "
            f"were ignored: {listed(unlisted)}"
        )
    if not present:
        raise PlateError(f"none of the {len(records)} images listed in {index_name} exist")
    first = read_tiff_header(fs, f"{folder}/{present[0]['url']}")
    pixel_um = next((r["pixel_um"] for r in records if r["pixel_um"]), None)
    tile_um = first.shape[1] * pixel_um if pixel_um else None

    site_of, grid, overlap = _remap(records, tile_um, first.shape, pixel_um, warnings)
    images = [
        ImageRef(
            well=well_id(r["row"] - 1, r["col"] - 1),
            site=site_of[(r["row"], r["col"], r["field"])],
            channel=r["channel"],
            z=r["plane"],
            timepoint=r["timepoint"],
            path=f"{folder}/{r['url']}",
            stage_x_um=r["x"],
            stage_y_um=r["y"],
        )
        for r in present
    ]
    hint = ""
    if absent:
        hint = (
            f" {len(absent)} file(s) listed in {index_name} are absent: "
            f"{listed([r['url'] for r in absent])}."
        )
    check_complete(where, images, hint)
    images.sort(key=plate_sort_key)
    channels = tuple(sorted({r.channel for r in images}))
    return PlateLayout(
        plate_id=_plate_id(root),
        format="phenix",
        url=url,
        wells=tuple(sorted({r.well for r in images}, key=split_well)),
        sites=tuple(sorted({r.site for r in images})),
        channels=channels,
        z_planes=tuple(sorted({r.z for r in images})),
        timepoints=tuple(sorted({r.timepoint for r in images})),
        grid=grid,
        tile_overlap=overlap,
        pixel_size_um=round(pixel_um, 6) if pixel_um else None,
        channel_names={c: n for c, n in sorted(names.items()) if c in channels},
        image_shape=first.shape,
        dtype=first.dtype,
        images=tuple(images),
        warnings=tuple(warnings),
    )


def _remap(
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
        site_of = {(rc[0], rc[1], f): f for rc, fields in wells.items() for f in fields}
        return site_of, None, None
    site_of: dict[tuple[int, int, int], int] = {}
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
