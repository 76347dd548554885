"""PerkinElmer/Revvity Opera Phenix and Operetta CLS plates (Harmony V5, V6 and V7 exports).

Layout: ``<plate>/Images/Index.idx.xml`` (Harmony V5/V6) or ``Index.xml`` (Harmony V7), in the
plate folder or ``Images/``, next to flat ``r01c01f01p01-ch1sk1fk1fl1.tiff`` files (often
LZW-compressed). The XML index is the truth for what exists; `harmony_index` parses it, this
module turns it into a `PlateLayout`: fields renumbered to raster sites (`harmony_sites`), stage
positions and focus in µm, acquisition times, channel names and wavelengths, pixel size, z
spacing, time interval, objective, PlateID and the variant (``Harmony V6 (Phenix)``).

Rules: every ``<URL>`` must resolve inside the plate folder (no absolute paths, no ``..`` out,
no symlink out: `paths`); every well must lie on the declared plate (`plate_bounds`); a file the
index lists but that does not exist is a compile error naming it; a hole in the (well, site,
channel, z, timepoint) grid is a compile error; TIFFs that the index does not list are reported in
``layout.warnings``; a plate with no pixel size anywhere in its index gets a warning.
"""

from __future__ import annotations

import re
from typing import Any

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.acquisition import time_interval_s, z_spacing_um
from prefect_hcs.formats.codecs import with_codec_check
from prefect_hcs.formats.completeness import find_padded, plane_completeness, plate_sort_key
from prefect_hcs.formats.fsio import display, list_names, listed, resolve
from prefect_hcs.formats.handlers import Evidence, register
from prefect_hcs.formats.harmony_index import HarmonyIndex, parse_harmony_index
from prefect_hcs.formats.harmony_sites import STAGE_Y_UP, raster_sites, remap_fields
from prefect_hcs.formats.layout import ImageRef, PlateError, PlateLayout, image_axes
from prefect_hcs.formats.paths import ensure_inside, existing_files, join_inside
from prefect_hcs.formats.plate_bounds import check_in_plate
from prefect_hcs.formats.tiff import read_tiff_header
from prefect_hcs.formats.wells import well_id

__all__ = [
    "FILENAME_RE",
    "INDEX_NAMES",
    "STAGE_Y_UP",
    "PhenixHandler",
    "find_index",
    "open_phenix",
    "raster_sites",
]

INDEX_NAMES = ("Index.idx.xml", "Index.xml")

# OpenHCS's Opera Phenix regex (row, column, field, plane, channel, sk = timepoint).
FILENAME_RE = re.compile(
    r"^r(\d{1,2})c(\d{1,2})f(\d+)p(\d+)-ch(\d+)(?:sk(\d+))?(?:fk\d+)?(?:fl\d+)?(?:_.*?)?\.(tiff?)$",
    re.IGNORECASE,
)


def find_index(fs: AbstractFileSystem, root: str) -> str | None:
    """Path of the Harmony index (``Images/`` first, then the plate folder), or None."""
    for folder in (f"{root}/Images", root):
        names = list_names(fs, folder)
        for candidate in INDEX_NAMES:
            if names.get(candidate) == "file":
                return f"{folder}/{candidate}"
    return None


def _plate_id(root: str) -> str:
    parts = [p for p in root.split("/") if p]
    if len(parts) >= 2 and parts[-1].lower() == "images":
        return parts[-2]
    return parts[-1] if parts else "plate"


def _variant(index: HarmonyIndex) -> str:
    name = f"Harmony {index.version}" if index.version else "Harmony"
    return f"{name} ({index.instrument})" if index.instrument else name


def _check_records(index: HarmonyIndex, root: str, folder: str, where: str) -> None:
    """Wells on the plate, URLs inside it; 0-based field/plane/channel/timepoint shifted to 1."""
    for r in index.records:
        check_in_plate(r["row"], r["col"], index.plate_rows, index.plate_columns, where, r["label"])
        r["path"] = join_inside(root, folder, r["url"], where, f"<URL> of {r['label']}")
    for key in ("field", "plane", "channel", "timepoint"):  # Harmony counts timepoints from 0
        low = min(r[key] for r in index.records)
        if low < 0:
            raise PlateError(f"malformed Harmony index {where}: a {key} number is {low} (< 0)")
        if low == 0:
            for r in index.records:
                r[key] += 1
            if key == "channel":
                index.channels = {c + 1: i for c, i in index.channels.items()}
                index.pixel_um = {c + 1: xy for c, xy in index.pixel_um.items()}


def _unlisted_warnings(
    fs: AbstractFileSystem, folder: str, index: HarmonyIndex, where: str
) -> list[str]:
    on_disk = {n for n, kind in list_names(fs, folder).items() if kind == "file"}
    in_index = {r["path"].rsplit("/", 1)[-1] for r in index.records}
    extra = sorted(n for n in on_disk - in_index if n.lower().endswith((".tif", ".tiff")))
    unparsed = [n for n in extra if not FILENAME_RE.match(n)]
    unlisted = [n for n in extra if FILENAME_RE.match(n)]
    warnings = []
    if unparsed:
        warnings.append(
            f"{len(unparsed)} TIFF name(s) in {display(fs, folder)} not understood and ignored "
            f"(expected 'r01c01f01p01-ch1sk1fk1fl1.tiff'): {listed(unparsed)}"
        )
    if unlisted:
        warnings.append(
            f"{len(unlisted)} TIFF(s) in {display(fs, folder)} are not listed in {where} and "
            f"were ignored: {listed(unlisted)}"
        )
    return warnings


def _pixel_size(index: HarmonyIndex, where: str, warnings: list[str]) -> float | None:
    """The plate's pixel size (µm) from ImageResolutionX, wherever the version keeps it."""
    sizes = {ch: (x, y) for ch, (x, y) in index.pixel_um.items() if x}
    if not sizes:
        warnings.append(
            f"{where} gives no pixel size (no ImageResolutionX in <Images> or <Maps><Entry>): "
            "the output will carry no physical scale"
        )
        return None
    xs = {round(x, 6) for x, _ in sizes.values()}
    if len(xs) > 1:
        warnings.append(f"{where}: channels have different pixel sizes {sorted(xs)} µm")
    x, y = next(iter(sizes.values()))
    if y and abs(x - y) > 1e-6 * max(x, y):
        warnings.append(f"{where}: pixels are not square ({x:.6g} x {y:.6g} µm); using X")
    return round(x, 6)


def _missing_files_error(missing: list[dict[str, Any]], sites: dict, where: str) -> PlateError:
    coords = [
        f"({well_id(r['row'] - 1, r['col'] - 1)}, {sites[(r['row'], r['col'], r['field'])]}, "
        f"{r['channel']}, {r['plane']}, {r['timepoint']})"
        for r in missing
    ]
    return PlateError(
        f"{len(missing)} planes missing in {where}: the index lists image files that do not "
        f"exist. Missing (well, site, channel, z, timepoint): {listed(coords)}; files: "
        f"{listed([r['url'] for r in missing])}. Copy the plate again, completely."
    )


def _refs(records: list[dict[str, Any]], site_of: dict) -> list[ImageRef]:
    return [
        ImageRef(
            well=well_id(r["row"] - 1, r["col"] - 1),
            site=site_of[(r["row"], r["col"], r["field"])],
            channel=r["channel"],
            z=r["plane"],
            timepoint=r["timepoint"],
            path=r["path"],
            stage_x_um=r["x"],
            stage_y_um=r["y"],
            z_um=r["z"],
            acquired_at=r["time"],
        )
        for r in records
    ]


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
    ensure_inside(fs, root, index_path, index_name)
    with fs.open(index_path, "rb") as fh:
        index = parse_harmony_index(fh.read(), index_name)
    folder = index_path.rsplit("/", 1)[0]
    _check_records(index, root, folder, index_name)
    warnings = _unlisted_warnings(fs, folder, index, index_name)
    exists = existing_files(fs, [r["path"] for r in index.records])
    present = [r for r in index.records if r["path"] in exists]
    missing = [r for r in index.records if r["path"] not in exists]
    if not present:
        raise PlateError(f"none of the {len(index.records)} images listed in {index_name} exist")
    for r in present:
        ensure_inside(fs, root, r["path"], index_name)
    first = read_tiff_header(fs, present[0]["path"])
    pixel_um = _pixel_size(index, index_name, warnings)
    tile_um = first.shape[1] * pixel_um if pixel_um else None
    site_of, grid, overlap = remap_fields(index.records, tile_um, first.shape, pixel_um, warnings)
    if missing:
        raise _missing_files_error(missing, site_of, where)
    images = _refs(present, site_of)
    absent = plane_completeness(where, images, hint=f" (from {index_name})")
    images.sort(key=plate_sort_key)
    z_step = z_spacing_um(images, warnings, index_name)
    axes = image_axes(images)
    channels = axes["channels"]
    info = {c: i for c, i in sorted(index.channels.items()) if c in channels}
    return PlateLayout(
        plate_id=_plate_id(root),
        format="phenix",
        url=url,
        **axes,
        grid=grid,
        tile_overlap=overlap,
        pixel_size_um=pixel_um,
        channel_names={c: i.name for c, i in info.items()},
        image_shape=first.shape,
        dtype=first.dtype,
        images=tuple(images),
        warnings=tuple(warnings),
        variant=_variant(index),
        plate_barcode=index.plate_id,
        z_spacing_um=z_step,
        time_interval_s=time_interval_s(images),
        objective=index.objective,
        channel_info=info,
        absent=absent,
        padded=find_padded(fs, images, exists),
    )


class PhenixHandler:
    """Opera Phenix / Operetta (Harmony) exports: recognised by their index file."""

    name = "phenix"

    def detect(self, fs: AbstractFileSystem, root: str) -> Evidence:
        """METADATA when a Harmony index is in the folder or its ``Images/``."""
        return Evidence.METADATA if find_index(fs, root) is not None else Evidence.NONE

    def open(
        self, url: str, storage_options: dict[str, Any] | None, fs: AbstractFileSystem
    ) -> PlateLayout:
        """`open_phenix`, then one decoded plane per TIFF compression (`with_codec_check`)."""
        return with_codec_check(fs, open_phenix(url, storage_options, fs=fs))


register(PhenixHandler())
