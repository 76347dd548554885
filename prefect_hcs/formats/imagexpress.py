"""Molecular Devices ImageXpress (MetaXpress) plates: acquisition folders and exports.

Two layouts (see docs/formats.md): the instrument's *acquisition folder* (``<date>/<id>/``, no
``.HTD``, projections beside ``ZStep_<z>`` folders) and the *export* (``<plate>.HTD`` plus
``TimePoint_<t>/[ZStep_<z>/]``, projections in ``ZStep_0``). Sites are numbered by MetaXpress in
row-major raster order (site 1 = top-left), so no remapping.

Decisions (the files on disk are the truth; the HTD describes what was *intended*):

* Axes are the ones the files have; HTD counts that disagree become warnings.
* Projections (ZStep_0, or beside ZStep folders) go to ``layout.projections``, never ``images``.
  A TIFF beside ZStep folders whose channel has no z-stack and whose XML names no projection
  method is that channel's single plane (z = 1).
* Absent planes (a (channel, z, t) no field has) are listed, missing ones are an error:
  `prefect_hcs.formats.completeness`.
* Metadata comes from the MetaSeries XML of a few headers: one per field (stage X/Y), every z of
  the first field (z positions, spacing), one per channel (name, wavelength, objective), one per
  timepoint (acquisition time, interval). Pixels are read only for one plane per compression.

This module finds the planes and builds the layout; what the headers say about them (stage, z,
time, channels, grid, overlap) is `imagexpress_meta`, the HTD `imagexpress_htd`, the file-name
scan `imagexpress_scan` and the MetaSeries XML `metaseries`.
"""

from __future__ import annotations

from typing import Any

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.compact import share_fields_sets
from prefect_hcs.formats.completeness import find_padded, plane_completeness, plate_sort_key
from prefect_hcs.formats.fsio import display, listed, resolve
from prefect_hcs.formats.handlers import Evidence, register
from prefect_hcs.formats.imagexpress_htd import (
    Htd,
    find_htd,
    htd_expectations,
    read_htd,
    well_warnings,
)
from prefect_hcs.formats.imagexpress_meta import (
    Headers,
    annotate,
    channel_meta,
    check_same_planes,
    fields_meta,
    grid_from_stage,
    overlap_from_stage,
    spacing,
    time_meta,
    z_positions,
)
from prefect_hcs.formats.imagexpress_scan import (
    Found,
    Scan,
    looks_like_metaxpress,
    parse_filename,
    scan_plate,
)
from prefect_hcs.formats.layout import ImageRef, PlateError, PlateLayout, image_axes
from prefect_hcs.formats.metaseries import PlaneMeta
from prefect_hcs.formats.paths import ensure_inside
from prefect_hcs.formats.plate_bounds import check_in_plate
from prefect_hcs.formats.tiff import check_decodable
from prefect_hcs.formats.wells import split_well

__all__ = ["ImageXpressHandler", "find_htd", "open_imagexpress", "parse_filename"]


def _ref(f: Found, z: int | None = None, projection: str | None = None) -> ImageRef:
    return ImageRef(
        well=f.well, site=f.site, channel=f.channel, z=z if z is not None else f.z,
        timepoint=f.t, path=f.path, projection=projection,
    )  # fmt: skip


def _split_projections(
    scan: Scan, headers: Headers
) -> tuple[list[ImageRef], list[ImageRef], list[str]]:
    """(z-planes, projections, notes): ZStep_0 and 'beside' files become projections."""
    stacked = {f.channel for f in scan.files if f.level == "zstep" and f.z > 0}
    method: dict[int, str | None] = {}
    for f in scan.files:
        if f.level != "flat" and (f.level == "beside" or f.z == 0) and f.channel not in method:
            meta = headers.maybe(f.path)
            method[f.channel] = meta.projection if meta else None
    images: list[ImageRef] = []
    projections: list[ImageRef] = []
    for f in scan.files:
        if f.level == "zstep" and f.z > 0 or f.level == "flat":
            images.append(_ref(f))
        elif f.level == "beside" and f.channel not in stacked and method[f.channel] is None:
            images.append(_ref(f, z=1))  # a channel taken at a single plane, no z-series
        else:
            projections.append(_ref(f, z=1, projection=method[f.channel] or "unspecified"))
    share_fields_sets((*images, *projections))  # 9,216 planes of 384 wells: 13 → 6.5 MB
    only = sorted({p.channel for p in projections} - {i.channel for i in images})
    notes = (
        [
            f"channel(s) {only} exist only as instrument projections: set "
            "vfs_config.plane_source = 'projections' to read them"
        ]
        if only
        else []
    )
    return images, projections, notes


def _check_inside(
    fs: AbstractFileSystem, root: str, scan: Scan, htd: Htd | None, htd_path: str | None
) -> None:
    """Every image resolves inside the plate (no symlink out), every well lies on the plate."""
    rows = htd.integer("YWells") if htd else None
    cols = htd.integer("XWells") if htd else None
    where = display(fs, htd_path) if htd_path else display(fs, root)
    for well in sorted({f.well for f in scan.files}, key=split_well):
        r, c = split_well(well)
        example = next(f.path for f in scan.files if f.well == well).rsplit("/", 1)[-1]
        check_in_plate(r + 1, c + 1, rows, cols, where, f"image {example}")
    for f in scan.files:
        ensure_inside(fs, root, f.path, display(fs, root))


def _no_images(fs: AbstractFileSystem, root: str, scan: Scan) -> PlateError:
    from prefect_hcs.formats.identify import describe_foreign

    where = display(fs, root)
    foreign = describe_foreign(fs, root)
    if foreign:
        return PlateError(f"{where} is not an ImageXpress plate: it holds {foreign}")
    if scan.subfolders:
        return PlateError(
            f"no MetaXpress images in {where}; it holds the folder(s) {listed(scan.subfolders)}. "
            "A MetaXpress acquisition lives in '<date>/<acquisition id>/': point the URL at "
            "that folder (the one holding the images or the ZStep_<n>/TimePoint_<n> folders)."
        )
    return PlateError(
        f"no MetaXpress images in {where}: expected '<plate>_<well>_s<site>_w<channel><GUID>.tif' "
        "files, in the folder or in TimePoint_<n>/[ZStep_<n>/] folders"
    )


def open_imagexpress(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    fs: AbstractFileSystem | None = None,
) -> PlateLayout:
    """Discover an ImageXpress plate (acquisition folder or export, with or without `.HTD`)."""
    fs, root = resolve(url, storage_options, fs)
    where = display(fs, root)
    htd_path = find_htd(fs, root)
    htd = read_htd(fs, htd_path) if htd_path else None
    scan = scan_plate(fs, root)
    if not scan.files:
        raise _no_images(fs, root, scan)
    _check_inside(fs, root, scan, htd, htd_path)
    headers = Headers(fs)
    images, projections, notes = _split_projections(scan, headers)
    hint = f" (plate folder {where}" + (f", HTD {display(fs, htd_path)})" if htd_path else ")")
    if not images:
        images, projections = [p.model_copy(update={"projection": None}) for p in projections], []
        notes = ["the plate holds only projections; they are read as single planes"]
    absent = plane_completeness(where, images, hint=hint)
    try:
        grid = {(r.well, r.site) for r in images}
        plane_completeness(f"{where} (projections)", projections or images, fields=grid, hint=hint)
    except PlateError as exc:  # the stack is still readable; reading projections will fail
        notes.append(f"{exc} The projections cannot be read; the z-stack can.")
    images.sort(key=plate_sort_key)
    projections.sort(key=plate_sort_key)
    return _build_layout(
        url, fs, root, scan, htd, htd_path, headers, images, projections, notes, absent
    )


def _build_layout(
    url: str,
    fs: AbstractFileSystem,
    root: str,
    scan: Scan,
    htd: Htd | None,
    htd_path: str | None,
    headers: Headers,
    images: list[ImageRef],
    projections: list[ImageRef],
    notes: list[str],
    absent: tuple,
) -> PlateLayout:
    axes = image_axes(images)
    wells, sites = axes["wells"], axes["sites"]
    first = headers(images[0].path)
    fields = fields_meta(images, headers)
    z_um = z_positions(images, headers)
    times = time_meta(images, headers)
    expect = htd_expectations(htd) if htd else None
    info, objective, name_warnings = channel_meta(
        images + projections, headers, expect["channel_names"] if expect else {}
    )
    warnings = _scan_warnings(scan) + notes + name_warnings
    grid, more = _grid(fs, htd_path, expect, sites, fields, wells[0])
    warnings += more
    if htd is not None and expect is not None:
        warnings += _count_warnings(display(fs, htd_path or ""), expect, images)
        warnings += well_warnings(display(fs, htd_path or ""), htd, expect["plate"], wells)
    overlap, more = overlap_from_stage(grid, fields, wells[0], first.shape, first.pixel_size_um)
    warnings += more
    check_same_planes(fs, headers, images[0].path)
    warnings += check_decodable(fs, headers.by_compression)
    warnings += [
        f"{m} Its metadata is unknown; its well fails when the file is read."
        for m in headers.unreadable
    ]
    is_export = htd is not None or scan.has_zstep0
    time_values = [t.timestamp() for _, t in sorted(times.items(), key=lambda kv: kv[1])]
    prefixes = {f.prefix for f in scan.files}
    return PlateLayout(
        plate_id=root.rstrip("/").rsplit("/", 1)[-1] or "plate",
        format="imagexpress",
        url=url,
        **axes,
        grid=grid,
        tile_overlap=overlap,
        pixel_size_um=first.pixel_size_um,
        channel_names={c: i.name for c, i in info.items()},
        image_shape=first.shape,
        dtype=first.dtype,
        images=tuple(annotate(images, fields, z_um, times)),
        projections=tuple(annotate(projections, fields, {}, {})),
        warnings=tuple(warnings),
        variant="MetaXpress export" if is_export else "MetaXpress acquisition",
        plate_barcode=next(iter(prefixes)) if len(prefixes) == 1 else None,
        z_spacing_um=spacing(sorted(z_um.values())),
        time_interval_s=spacing(time_values),
        objective=objective,
        channel_info=info,
        absent=absent,
        padded=find_padded(fs, images + projections, scan.sizes) if is_export else (),
    )


def _grid(
    fs: AbstractFileSystem,
    htd_path: str | None,
    expect: dict[str, Any] | None,
    sites: tuple[int, ...],
    fields: dict[tuple[str, int], PlaneMeta],
    well: str,
) -> tuple[tuple[int, int] | None, list[str]]:
    """The site grid: the HTD's when it fits the files, else the stage positions'."""
    from_stage = grid_from_stage(sites, fields, well)
    if expect is None:
        return (from_stage or ((1, 1) if sites == (1,) else None)), []
    name = display(fs, htd_path or "")
    grid: tuple[int, int] = expect["grid"]
    n_grid = grid[0] * grid[1]
    if expect["selected_sites"] is not None and expect["selected_sites"] != n_grid:
        return None, [
            f"{name} selects {expect['selected_sites']} of {n_grid} sites; sites cannot be "
            "placed on the grid, so no grid is reported (no stitching)"
        ]
    if max(sites) > n_grid or len(sites) != n_grid:
        found = (
            f"; using the stage positions' {from_stage[0]}x{from_stage[1]}" if from_stage else ""
        )
        return from_stage, [
            f"{name} declares a {grid[0]}x{grid[1]} site grid but the files have sites "
            f"{list(sites)}{found or '; no grid is reported'}"
        ]
    return grid, []


def _count_warnings(htd_name: str, expect: dict[str, Any], images: list[ImageRef]) -> list[str]:
    out = []
    for label, declared, found in (
        ("wavelengths", expect["wavelengths"], len({r.channel for r in images})),
        ("z-steps", expect["z"], len({r.z for r in images})),
        ("timepoints", expect["timepoints"], len({r.timepoint for r in images})),
    ):
        if declared is not None and declared != found:
            out.append(
                f"{htd_name} declares {declared} {label} but the image files have {found}; "
                f"using the {found} found"
            )
    return out


def _scan_warnings(scan: Scan) -> list[str]:
    out = []
    if scan.unparsed:
        out.append(
            f"{len(scan.unparsed)} image file name(s) not understood and ignored (expected "
            f"'<plate>_<well>_s<site>_w<channel>[GUID].tif'): {listed(scan.unparsed)}"
        )
    if scan.not_tiff:
        out.append(
            f"{len(scan.not_tiff)} non-TIFF file(s) in image folders ignored: "
            f"{listed(scan.not_tiff)}"
        )
    if scan.stray:
        out.append(
            f"{len(scan.stray)} TIFF(s) beside the TimePoint_<t> folders ignored (stray files): "
            f"{listed(scan.stray)}"
        )
    if scan.conflicts:
        out.append(
            f"{len(scan.conflicts)} file name(s) whose _z/_t suffix disagrees with their folder; "
            f"the folder wins: {listed(scan.conflicts)}"
        )
    return out


class ImageXpressHandler:
    """ImageXpress (MetaXpress) folders and exports: an ``.HTD``, or MetaXpress-named TIFFs."""

    name = "imagexpress"

    def detect(self, fs: AbstractFileSystem, root: str) -> Evidence:
        """METADATA for an ``.HTD``; NAMES when only the TIFF names follow MetaXpress's pattern
        (so a Harmony index or a CellVoyager ``.mlf`` beside such files wins)."""
        if find_htd(fs, root) is not None:
            return Evidence.METADATA
        return Evidence.NAMES if looks_like_metaxpress(fs, root) else Evidence.NONE

    def open(
        self, url: str, storage_options: dict[str, Any] | None, fs: AbstractFileSystem
    ) -> PlateLayout:
        """`open_imagexpress` (it decodes one plane per compression from the headers it reads)."""
        return open_imagexpress(url, storage_options, fs=fs)


register(ImageXpressHandler())
