"""What the MetaSeries headers of an ImageXpress plate say: stage, z, time, channels, grid.

`open_imagexpress` reads a few headers (`Headers` reads each once, leniently): one per field
(stage X/Y), every z of the first field (z positions, spacing), one per channel (name,
wavelength, objective), one per timepoint (acquisition time, interval). The functions here turn
them into the layout's metadata: the site grid and tile overlap from the stage positions, the z
and time spacing, the channel info, and the physical position of every plane (`annotate`).
"""

from __future__ import annotations

import statistics
from typing import Any

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.compact import share_fields_sets
from prefect_hcs.formats.fsio import display
from prefect_hcs.formats.layout import ChannelInfo, ImageRef, PlateError
from prefect_hcs.formats.metaseries import PlaneMeta, read_plane_meta

__all__ = [
    "Headers",
    "annotate",
    "channel_meta",
    "check_same_planes",
    "fields_meta",
    "grid_from_stage",
    "overlap_from_stage",
    "spacing",
    "time_meta",
    "z_positions",
]


class Headers:
    """Reads MetaSeries headers once each; remembers a few paths per TIFF compression.

    Metadata reads are lenient (`maybe`): a damaged file must fail its own well when its pixels
    are read, not the whole plate at compile time. Only the first plane (shape, dtype) is strict.
    """

    SAMPLES = 3

    def __init__(self, fs: AbstractFileSystem) -> None:
        self.fs = fs
        self.cache: dict[str, PlaneMeta] = {}
        self.by_compression: dict[str, list[str]] = {}
        self.unreadable: list[str] = []

    def __call__(self, path: str) -> PlaneMeta:
        """The header of ``path`` (read once); raises `PlateError` when it cannot be read."""
        if path not in self.cache:
            meta = read_plane_meta(self.fs, path)
            self.cache[path] = meta
            samples = self.by_compression.setdefault(meta.compression, [])
            if len(samples) < self.SAMPLES:
                samples.append(path)
        return self.cache[path]

    def maybe(self, path: str) -> PlaneMeta | None:
        """The header, or None (remembered for a warning) when the file cannot be read."""
        try:
            return self(path)
        except PlateError as exc:
            self.unreadable.append(str(exc))
            return None


def fields_meta(images: list[ImageRef], headers: Headers) -> dict[tuple[str, int], PlaneMeta]:
    """One header per (well, site): its first plane, or the next one when that is unreadable."""
    planes: dict[tuple[str, int], list[ImageRef]] = {}
    for ref in images:
        planes.setdefault((ref.well, ref.site), []).append(ref)
    out: dict[tuple[str, int], PlaneMeta] = {}
    for key, refs in planes.items():
        for ref in refs[:3]:
            if (meta := headers.maybe(ref.path)) is not None:
                out[key] = meta
                break
    return out


def z_positions(images: list[ImageRef], headers: Headers) -> dict[str, float]:
    """{path: z µm} for every z of the first field's most complete channel at timepoint 1."""
    ref0 = images[0]
    counts: dict[int, int] = {}
    for r in images:
        if (r.well, r.site, r.timepoint) == (ref0.well, ref0.site, ref0.timepoint):
            counts[r.channel] = counts.get(r.channel, 0) + 1
    channel = max(sorted(counts), key=lambda c: counts[c])
    stack = [
        r
        for r in images
        if (r.well, r.site, r.timepoint, r.channel)
        == (ref0.well, ref0.site, ref0.timepoint, channel)
    ]
    metas = {r.path: headers.maybe(r.path) for r in stack}
    return {path: m.z_um for path, m in metas.items() if m is not None and m.z_um is not None}


def spacing(values: list[float]) -> float | None:
    """The median positive step between consecutive values (4 decimals), None without one."""
    steps = [round(abs(b - a), 4) for a, b in zip(values, values[1:], strict=False)]
    steps = [s for s in steps if s > 0]
    return round(statistics.median(steps), 4) if steps else None


def time_meta(images: list[ImageRef], headers: Headers) -> dict[str, Any]:
    """{path: acquisition time} of the first plane of each timepoint."""
    first: dict[int, ImageRef] = {}
    for ref in images:
        first.setdefault(ref.timepoint, ref)
    metas = {r.path: headers.maybe(r.path) for r in first.values()}
    return {path: m.acquired_at for path, m in metas.items() if m is not None and m.acquired_at}


def channel_meta(
    refs: list[ImageRef], headers: Headers, htd_names: dict[int, str]
) -> tuple[dict[int, ChannelInfo], str | None, list[str]]:
    """Channel names/wavelengths from the files (HTD names as fallback), objective, warnings."""
    first: dict[int, ImageRef] = {}
    for ref in refs:
        first.setdefault(ref.channel, ref)
    info: dict[int, ChannelInfo] = {}
    objective = None
    warnings = []
    for channel, ref in sorted(first.items()):
        meta = headers.maybe(ref.path) or PlaneMeta(shape=(0, 0), dtype="", compression="")
        objective = objective or meta.objective
        name = meta.illumination or htd_names.get(channel) or f"w{channel}"
        declared = htd_names.get(channel)
        if meta.illumination and declared and declared != meta.illumination:
            warnings.append(
                f"the HTD names wavelength {channel} {declared!r} but its images say "
                f"{meta.illumination!r}; using {meta.illumination!r}"
            )
        info[channel] = ChannelInfo(name=name, emission_nm=meta.wavelength_nm)
    return info, objective, warnings


def grid_from_stage(
    sites: tuple[int, ...], fields: dict[tuple[str, int], PlaneMeta], well: str
) -> tuple[int, int] | None:
    """(rows, cols) from the distinct stage X and Y of one well's sites, if they form a raster."""
    pos: dict[int, tuple[float, float]] = {}  # site: (y, x) rounded to 0.1 µm
    for s in sites:
        m = fields.get((well, s))
        if m is None or m.stage_x_um is None or m.stage_y_um is None:
            return None
        pos[s] = (round(m.stage_y_um, 1), round(m.stage_x_um, 1))
    xs = sorted({x for _, x in pos.values()})
    ys = sorted({y for y, _ in pos.values()})
    if len(xs) * len(ys) != len(sites) or list(sites) != list(range(1, len(sites) + 1)):
        return None
    for s, yx in pos.items():
        r, c = divmod(s - 1, len(xs))
        if yx != (ys[r], xs[c]):
            return None
    return len(ys), len(xs)


def overlap_from_stage(
    grid: tuple[int, int] | None,
    fields: dict[tuple[str, int], PlaneMeta],
    well: str,
    shape: tuple[int, int],
    pixel: float | None,
) -> tuple[float | None, list[str]]:
    """Tile overlap from the stage positions of neighbouring sites of the first well."""
    if grid is None or pixel is None or grid[0] * grid[1] == 1:
        return None, []
    rows, cols = grid
    first = fields.get((well, 1))
    estimates = []
    for neighbour, axis, extent in ((2, "x", shape[1]), (cols + 1, "y", shape[0])):
        if (axis == "x" and cols < 2) or (axis == "y" and rows < 2):
            continue
        other = fields.get((well, neighbour))
        a = getattr(first, f"stage_{axis}_um", None)
        b = getattr(other, f"stage_{axis}_um", None)
        if a is not None and b is not None:
            estimates.append(1.0 - abs(b - a) / (extent * pixel))
    if not estimates:
        return None, []
    overlap = round(sum(estimates) / len(estimates), 4)
    if overlap < 0:
        return 0.0, [f"sites of {well} do not touch (gap of {-overlap:.1%} of a tile)"]
    return overlap, []


def annotate(
    refs: list[ImageRef],
    fields: dict[tuple[str, int], PlaneMeta],
    z_um: dict[str, float],
    times: dict[str, Any],
) -> list[ImageRef]:
    """Stage X/Y on every plane of a field; z and time on the planes whose header was read."""
    out = []
    for r in refs:
        meta = fields.get((r.well, r.site))
        update: dict[str, Any] = {}
        if meta is not None and meta.stage_x_um is not None:
            update |= {"stage_x_um": meta.stage_x_um, "stage_y_um": meta.stage_y_um}
        if r.path in z_um:
            update["z_um"] = z_um[r.path]
        if r.path in times:
            update["acquired_at"] = times[r.path]
        out.append(r.model_copy(update=update) if update else r)
    share_fields_sets(out)  # each copy got its own fields set
    return out


def check_same_planes(fs: AbstractFileSystem, headers: Headers, first_path: str) -> None:
    """Every header read must show the first plane's shape and dtype (one array per field)."""
    first = headers(first_path)
    for path, meta in headers.cache.items():
        if meta.dtype and (meta.shape, meta.dtype) != (first.shape, first.dtype):
            raise PlateError(
                f"{display(fs, path)} is a {meta.shape[0]}x{meta.shape[1]} {meta.dtype} image but "
                f"{display(fs, first_path)} is {first.shape[0]}x{first.shape[1]} {first.dtype}: "
                "every plane of a plate must have the same size and pixel type (the plate mixes "
                "acquisitions or binning settings); export the wavelengths as separate plates"
            )
