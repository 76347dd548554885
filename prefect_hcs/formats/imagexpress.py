"""Molecular Devices ImageXpress (MetaXpress) plates: a `.HTD` text file plus TIFFs per plane.

Layout: ``<plate>/<name>.HTD`` and ``TimePoint_<t>/[ZStep_<z>/]<prefix>_<Well>_s<site>_w<c><GUID>.tif``.
Sites are numbered by MetaXpress in row-major raster order (site 1 = top-left), so no remapping.

Decisions (the files on disk are the truth; the HTD describes what was *intended*):

* Counts in the HTD that disagree with the files (wavelengths, sites, z-steps, timepoints) become
  entries in ``layout.warnings``; the axes of the layout are the ones found in the files. A plane
  missing for some (well, site, channel, z, timepoint) inside those axes is a PlateError.
* File names that cannot be parsed, and non-TIFF files in image folders, are listed in warnings.
  ``_thumb`` thumbnails are skipped silently. When a TimePoint folder has ZStep folders, the images
  directly inside it (MetaXpress projections) are skipped with a warning.
* Pixel size and stage positions come from the MetaXpress TIFF description
  (``spatial-calibration-x``, ``stage-position-x/y``); the overlap is derived from the stage positions
  of sites 1, 2 and ``cols + 1`` of the first well (three headers read), else None.
"""

from __future__ import annotations

import csv
import re
from typing import Any

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.detect import (
    TiffHeader,
    check_complete,
    display,
    list_names,
    listed,
    plate_sort_key,
    read_tiff_header,
    resolve,
)
from prefect_hcs.formats.layout import ImageRef, PlateError, PlateLayout, split_well, well_id

_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
# Close to OpenHCS's ImageXpress regex, plus the optional GUID MetaXpress glues to the wavelength.
FILENAME_RE = re.compile(
    r"^(?:(?P<prefix>.*?)_)??(?P<well>(?-i:[A-Z]{1,2})\d{1,3})"
    r"(?:_s(?P<site>\d+))?"
    r"(?:_w(?P<channel>\d+?)(?P<guid>" + _GUID + r")?)?"
    r"(?:_z(?P<z>\d+))?"
    r"(?:_t(?P<t>\d+))?"
    r"\.(?P<ext>tiff?)$",
    re.IGNORECASE,
)
_TIMEPOINT_DIR = re.compile(r"^TimePoint[_-]?(\d+)$", re.IGNORECASE)
_ZSTEP_DIR = re.compile(r"^ZStep[_-]?(\d+)$", re.IGNORECASE)
_HTD_LINE = re.compile(r'^"(?P<key>[^"]+)"\s*(?:,(?P<rest>.*))?$')
_TIFF_EXT = (".tif", ".tiff")


def parse_filename(name: str) -> dict[str, Any] | None:
    """Well, site, channel, z and t of a MetaXpress file name (None when it does not parse)."""
    m = FILENAME_RE.match(name)
    if not m:
        return None
    letters = "".join(c for c in m["well"] if c.isalpha())
    number = int("".join(c for c in m["well"] if c.isdigit()))
    if number < 1:
        return None
    row, _ = split_well(f"{letters}01")
    return {
        "well": well_id(row, number - 1),
        "site": int(m["site"]) if m["site"] else None,
        "channel": int(m["channel"]) if m["channel"] else None,
        "z": int(m["z"]) if m["z"] else None,
        "t": int(m["t"]) if m["t"] else None,
    }


class Htd:
    """A parsed `.HTD` file: ``"Key", value, value...`` lines, remembered with their line numbers."""

    def __init__(self, text: str, where: str) -> None:
        self.where = where
        self.entries: dict[str, tuple[int, list[str]]] = {}
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            m = _HTD_LINE.match(line)
            if not m:
                raise PlateError(
                    f"malformed HTD file {where}, line {lineno}: expected '\"Key\", value', "
                    f"got {raw[:80]!r}"
                )
            rest = m["rest"]
            values = next(csv.reader([rest], skipinitialspace=True)) if rest else []
            self.entries[m["key"].strip()] = (lineno, [v.strip() for v in values])
        if not self.entries:
            raise PlateError(f"malformed HTD file {where}: it holds no '\"Key\", value' lines")

    def has(self, key: str) -> bool:
        return key in self.entries

    def values(self, key: str) -> list[str]:
        return self.entries[key][1] if key in self.entries else []

    def text(self, key: str) -> str | None:
        values = self.values(key)
        return values[0] if values else None

    def integer(self, key: str) -> int | None:
        if key not in self.entries:
            return None
        lineno, values = self.entries[key]
        try:
            return int(values[0])
        except (IndexError, ValueError):
            raise PlateError(
                f"malformed HTD file {self.where}, line {lineno}: {key!r} must be an integer, "
                f"got {', '.join(values) or 'nothing'}"
            ) from None

    def flag(self, key: str) -> bool | None:
        if key not in self.entries:
            return None
        lineno, values = self.entries[key]
        word = values[0].upper() if values else ""
        if word in ("TRUE", "1"):
            return True
        if word in ("FALSE", "0"):
            return False
        raise PlateError(
            f"malformed HTD file {self.where}, line {lineno}: {key!r} must be TRUE or FALSE, "
            f"got {', '.join(values) or 'nothing'}"
        )

    def flags(self, key: str) -> list[bool]:
        lineno, values = self.entries[key]
        out = []
        for v in values:
            if v.upper() not in ("TRUE", "FALSE"):
                raise PlateError(
                    f"malformed HTD file {self.where}, line {lineno}: {key!r} must be a list of "
                    f"TRUE/FALSE, got {v!r}"
                )
            out.append(v.upper() == "TRUE")
        return out


def find_htd(fs: AbstractFileSystem, root: str) -> str | None:
    """Path of the plate's `.HTD` file (plate folder first, then TimePoint_1/), or None."""
    for folder in (root, f"{root}/TimePoint_1"):
        names = sorted(n for n, kind in list_names(fs, folder).items() if kind == "file")
        htds = [n for n in names if n.lower().endswith(".htd")]
        if htds:
            return f"{folder}/{htds[0]}"
    return None


def read_htd(fs: AbstractFileSystem, path: str) -> Htd:
    """Read and parse an HTD file (UTF-8 with or without BOM, else Latin-1)."""
    with fs.open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return Htd(text, display(fs, path))


def _prop(description: str, key: str) -> str | None:
    m = re.search(r'id="' + re.escape(key) + r'"[^>]*?value="([^"]*)"', description)
    return m.group(1) if m else None


def _float_prop(description: str, key: str) -> float | None:
    value = _prop(description, key)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def pixel_size_from_description(description: str) -> float | None:
    """µm per pixel from a MetaXpress TIFF description, or None when not calibrated."""
    size = _float_prop(description, "spatial-calibration-x")
    units = (_prop(description, "spatial-calibration-units") or "um").lower()
    if size is None or size <= 0 or units not in ("um", "µm", "micron", "microns", "micrometer"):
        return None
    return size


class _Scan:
    """Collects image refs and the problems found while walking the image folders."""

    def __init__(self) -> None:
        self.images: list[ImageRef] = []
        self.unparsed: list[str] = []
        self.not_tiff: list[str] = []
        self.skipped_projections: list[str] = []
        self.conflicts: list[str] = []

    def add_folder(self, fs: AbstractFileSystem, folder: str, t: int | None, z: int | None) -> None:
        for name, kind in sorted(list_names(fs, folder).items()):
            if kind != "file" or "_thumb" in name.lower() or name.lower().endswith(".htd"):
                continue
            self.add_file(f"{folder}/{name}", name, t, z)

    def add_file(self, path: str, name: str, t: int | None, z: int | None) -> None:
        if not name.lower().endswith(_TIFF_EXT):
            self.not_tiff.append(path)
            return
        parsed = parse_filename(name)
        if parsed is None:
            self.unparsed.append(path)
            return
        for axis, folder_value in (("t", t), ("z", z)):
            if (
                parsed[axis] is not None
                and folder_value is not None
                and parsed[axis] != folder_value
            ):
                self.conflicts.append(f"{path} ({axis}={parsed[axis]} vs folder {folder_value})")
        self.images.append(
            ImageRef(
                well=parsed["well"],
                site=parsed["site"] or 1,
                channel=parsed["channel"] or 1,
                z=z if z is not None else parsed["z"] or 1,
                timepoint=t if t is not None else parsed["t"] or 1,
                path=path,
            )
        )


def _scan(fs: AbstractFileSystem, root: str) -> _Scan:
    scan = _Scan()
    entries = list_names(fs, root)
    timepoints = sorted(
        (int(m.group(1)), name)
        for name, kind in entries.items()
        if kind == "directory" and (m := _TIMEPOINT_DIR.match(name))
    )
    if not timepoints:  # flat export: images in the plate folder itself
        scan.add_folder(fs, root, None, None)
        scan.not_tiff.clear()  # other files next to the HTD are not image-folder clutter
        return scan
    loose = [n for n, k in entries.items() if k == "file" and n.lower().endswith(_TIFF_EXT)]
    scan.skipped_projections += [f"{root}/{n}" for n in sorted(loose) if "_thumb" not in n.lower()]
    for t, tp_name in timepoints:
        tp_dir = f"{root}/{tp_name}"
        tp_entries = list_names(fs, tp_dir)
        zsteps = sorted(
            (int(m.group(1)), name)
            for name, kind in tp_entries.items()
            if kind == "directory" and (m := _ZSTEP_DIR.match(name))
        )
        if not zsteps:
            scan.add_folder(fs, tp_dir, t, None)
            continue
        scan.skipped_projections += [
            f"{tp_dir}/{n}"
            for n, k in sorted(tp_entries.items())
            if k == "file" and n.lower().endswith(_TIFF_EXT) and "_thumb" not in n.lower()
        ]
        for z, z_name in zsteps:
            scan.add_folder(fs, f"{tp_dir}/{z_name}", t, z)
    return scan


def _htd_expectations(htd: Htd) -> dict[str, Any]:
    """Grid, channel names and expected counts declared by the HTD."""
    sites_on = htd.flag("Sites")
    x_sites, y_sites = htd.integer("XSites"), htd.integer("YSites")
    if sites_on and (x_sites is None or y_sites is None):
        raise PlateError(
            f"malformed HTD file {htd.where}: 'Sites' is TRUE but XSites/YSites missing"
        )
    if sites_on is False or (x_sites is None and y_sites is None):
        x_sites, y_sites = 1, 1
    selected = None
    if sites_on and all(htd.has(f"SiteSelection{r}") for r in range(1, (y_sites or 1) + 1)):
        selected = sum(sum(htd.flags(f"SiteSelection{r}")) for r in range(1, (y_sites or 1) + 1))
    n_waves = htd.integer("NWavelengths")
    if htd.flag("Waves") is False:
        n_waves = 1
    names: dict[int, str] = {}
    collected = 0
    for c in range(1, (n_waves or 0) + 1):
        if htd.text(f"WaveName{c}"):
            names[c] = htd.text(f"WaveName{c}") or ""
        collect = htd.integer(f"WaveCollect{c}") if htd.has(f"WaveCollect{c}") else 1
        collected += 1 if collect else 0
    z_steps = htd.integer("ZSteps") if htd.flag("ZSeries") else 1
    return {
        "grid": (y_sites or 1, x_sites or 1),
        "selected_sites": selected,
        "wavelengths": collected if n_waves is not None else None,
        "channel_names": names,
        "z": z_steps,
        "timepoints": htd.integer("TimePoints"),
        "plate": (htd.integer("YWells"), htd.integer("XWells")),
    }


def _overlap(
    fs: AbstractFileSystem, images: list[ImageRef], grid: tuple[int, int], first: TiffHeader
) -> tuple[float | None, list[str]]:
    """Tile overlap from the stage positions of neighbouring sites of the first well."""
    rows, cols = grid
    pixel = pixel_size_from_description(first.description)
    x1 = _float_prop(first.description, "stage-position-x")
    y1 = _float_prop(first.description, "stage-position-y")
    if pixel is None or x1 is None or y1 is None or rows * cols == 1:
        return None, []
    ref = images[0]
    by_site = {
        r.site: r
        for r in images
        if (r.well, r.channel, r.z, r.timepoint) == (ref.well, ref.channel, ref.z, ref.timepoint)
    }
    estimates: list[float] = []
    for neighbour, axis, extent, start in (
        (2, "x", first.shape[1], x1),
        (cols + 1, "y", first.shape[0], y1),
    ):
        if (axis == "x" and cols < 2) or (axis == "y" and rows < 2) or neighbour not in by_site:
            continue
        desc = read_tiff_header(fs, by_site[neighbour].path).description
        pos = _float_prop(desc, f"stage-position-{axis}")
        if pos is not None:
            estimates.append(1.0 - abs(pos - start) / (extent * pixel))
    if not estimates:
        return None, []
    overlap = round(sum(estimates) / len(estimates), 4)
    if overlap < 0:
        return 0.0, [f"sites of {ref.well} do not touch (gap of {-overlap:.1%} of a tile)"]
    return overlap, []


def open_imagexpress(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    fs: AbstractFileSystem | None = None,
) -> PlateLayout:
    """Discover an ImageXpress plate: HTD for grid and names, file names for the plane index."""
    fs, root = resolve(url, storage_options, fs)
    where = display(fs, root)
    htd_path = find_htd(fs, root)
    if htd_path is None:
        raise PlateError(
            f"not an ImageXpress plate: no .HTD file in {where} or {where}/TimePoint_1. "
            "MetaXpress writes '<plate>.HTD' next to the TimePoint_<n> folders."
        )
    htd = read_htd(fs, htd_path)
    expect = _htd_expectations(htd)
    scan = _scan(fs, root)
    warnings = _scan_warnings(scan)
    hint = f" (plate folder {where}, HTD {display(fs, htd_path)})"
    check_complete(where, scan.images, hint)
    images = sorted(scan.images, key=plate_sort_key)
    wells = tuple(sorted({r.well for r in images}, key=split_well))
    sites = tuple(sorted({r.site for r in images}))
    channels = tuple(sorted({r.channel for r in images}))
    z_planes = tuple(sorted({r.z for r in images}))
    timepoints = tuple(sorted({r.timepoint for r in images}))

    grid: tuple[int, int] | None = expect["grid"]
    n_grid = grid[0] * grid[1]
    htd_name = display(fs, htd_path)
    if expect["selected_sites"] is not None and expect["selected_sites"] != n_grid:
        warnings.append(
            f"{htd_name} selects {expect['selected_sites']} of {n_grid} sites; sites cannot be "
            "placed on the grid, so no grid is reported (no stitching)"
        )
        grid = None
    elif max(sites) > n_grid or len(sites) != n_grid:
        warnings.append(
            f"{htd_name} declares a {grid[0]}x{grid[1]} site grid but the files have sites "
            f"{list(sites)}; no grid is reported"
        )
        grid = None
    for label, declared, found in (
        ("wavelengths", expect["wavelengths"], len(channels)),
        ("z-steps", expect["z"], len(z_planes)),
        ("timepoints", expect["timepoints"], len(timepoints)),
    ):
        if declared is not None and declared != found:
            warnings.append(
                f"{htd_name} declares {declared} {label} but the image files have {found}; "
                f"using the {found} found"
            )
    warnings += _well_warnings(htd_name, htd, expect["plate"], wells)

    first = read_tiff_header(fs, images[0].path)
    overlap, more = _overlap(fs, images, grid, first) if grid else (None, [])
    warnings += more
    return PlateLayout(
        plate_id=root.rstrip("/").rsplit("/", 1)[-1] or htd_path.rsplit("/", 1)[-1][:-4],
        format="imagexpress",
        url=url,
        wells=wells,
        sites=sites,
        channels=channels,
        z_planes=z_planes,
        timepoints=timepoints,
        grid=grid,
        tile_overlap=overlap,
        pixel_size_um=pixel_size_from_description(first.description),
        channel_names={c: n for c, n in expect["channel_names"].items() if c in channels},
        image_shape=first.shape,
        dtype=first.dtype,
        images=tuple(images),
        warnings=tuple(warnings),
    )


def _scan_warnings(scan: _Scan) -> list[str]:
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
    if scan.skipped_projections:
        out.append(
            f"{len(scan.skipped_projections)} TIFF(s) outside the TimePoint_<t>/ZStep_<z> folders "
            f"ignored (projections or stray files): {listed(scan.skipped_projections)}"
        )
    if scan.conflicts:
        out.append(
            f"{len(scan.conflicts)} file name(s) whose _z/_t suffix disagrees with their folder; "
            f"the folder wins: {listed(scan.conflicts)}"
        )
    return out


def _well_warnings(
    htd_name: str, htd: Htd, plate: tuple[int | None, int | None], wells: tuple[str, ...]
) -> list[str]:
    """Wells outside the plate the HTD declares, and selected wells without images."""
    n_rows, n_cols = plate
    out = []
    if n_rows and n_cols:
        outside = [w for w in wells if split_well(w)[0] >= n_rows or split_well(w)[1] >= n_cols]
        if outside:
            out.append(f"wells {outside} lie outside the {n_rows}x{n_cols} plate of {htd_name}")
        if all(htd.has(f"WellsSelection{r}") for r in range(1, n_rows + 1)):
            selected = [
                well_id(r, c)
                for r in range(n_rows)
                for c, on in enumerate(htd.flags(f"WellsSelection{r + 1}"))
                if on
            ]
            empty = sorted(set(selected) - set(wells), key=split_well)
            if empty:
                out.append(
                    f"{len(empty)} well(s) selected in {htd_name} have no images: {listed(empty)}"
                )
    return out
