"""Synthetic MetaXpress plates in the two layouts ImageXpress users really hand over.

*Acquisition folder* (what the instrument writes, no ``.HTD``)::

    <out>/<YYYY-MM-DD>/<acquisition id>/
        [TimePoint_<t>/]                      only for time series
            <plate>_<well>_s<site>_w<c><GUID>.tif        projections (or single planes)
            <plate>_<well>_s<site>_w<c>_thumb<GUID>.tif  previews, never images
            ZStep_<z>/<plate>_<well>_s<site>_w<c><GUID>.tif  (z-series only)

*Export* (MetaXpress "export plate")::

    <out>/<plate>.HTD                         optional
    <out>/TimePoint_<t>/[ZStep_<z>/]...       ZStep_0 holds the projections

A single wavelength drops ``_w<c>`` and a single site drops ``_s<site>``. Every TIFF is LZW-compressed
with a MetaSeries XML ImageDescription (Software ``MetaSeries``): pixel size, stage X/Y, z position,
acquisition time, illumination setting, wavelength, objective and, for projections, the
``Z Projection Method``. Exports pad a channel taken at a single plane (or only as a projection) with
byte-identical copies in every ``ZStep_<z>``, as MetaXpress does. Pixels come from the same scene
generator as `prefect_hcs.testing.synthetic` (blurred nuclei, jittered tiles, seeded per well).

What one image file looks like (its MetaSeries description, TIFF, name and folder) is
`synthetic_metaseries`; this module decides which files a plate has.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from prefect_hcs.formats.fsio import resolve
from prefect_hcs.formats.wells import split_well
from prefect_hcs.testing.synthetic import htd_text, new_guid, site_grid
from prefect_hcs.testing.synthetic_metaseries import (
    PlaneFacts,
    Variant,
    file_name,
    metaseries_description,
    metaseries_tiff,
    plane_folder,
    plane_props,
)
from prefect_hcs.testing.synthetic_scene import JITTER_PX, place_nuclei, render_signals, tile_noise

START = datetime(2026, 11, 30, 21, 14, 5)


@dataclass(frozen=True)
class IxChannel:
    """One wavelength of a MetaXpress journal.

    Attributes:
        name: The illumination setting (``_IllumSetting_``), e.g. ``"DAPI"``.
        wavelength_nm: Emission wavelength written to the ``wavelength`` property.
        stack: Planes saved: ``"all"`` z-steps, a ``"single"`` plane (the first), or ``"none"``.
        projection: Whether the instrument also saves a maximum projection.
        timepoints: The timepoints this wavelength is taken at (None = every timepoint).
    """

    name: str
    wavelength_nm: int
    stack: Literal["all", "single", "none"] = "all"
    projection: bool = False
    timepoints: tuple[int, ...] | None = None


DEFAULT_CHANNELS = (
    IxChannel("DAPI", 452),
    IxChannel("FITC", 518),
    IxChannel("TexasRed", 615),
    IxChannel("Cy5", 670),
)

#: A mixed acquisition as facilities run them: a stack with its projection, a channel at a single
#: plane, one only as a projection, one only at the first timepoint.
MIXED_CHANNELS = (
    IxChannel("DAPI", 452, stack="all", projection=True),
    IxChannel("FITC", 518, stack="single"),
    IxChannel("Cy5", 670, stack="none", projection=True),
    IxChannel("TexasRed", 615, stack="all", timepoints=(1,)),
)


class _Writer:
    """Writes files through fsspec, creating each folder once, and remembers what it wrote."""

    def __init__(self, out_dir: str) -> None:
        self.fs, self.root = resolve(out_dir)
        self.fs.makedirs(self.root, exist_ok=True)
        self.made: set[str] = set()
        self.files: list[str] = []

    def write(self, path: str, data: bytes) -> None:
        folder = path.rsplit("/", 1)[0]
        if folder not in self.made:
            self.fs.makedirs(folder, exist_ok=True)
            self.made.add(folder)
        with self.fs.open(path, "wb") as fh:
            fh.write(data)
        self.files.append(path)

    def copy(self, src: str, dst: str) -> None:
        folder = dst.rsplit("/", 1)[0]
        if folder not in self.made:
            self.fs.makedirs(folder, exist_ok=True)
            self.made.add(folder)
        self.fs.copy(src, dst)


def make_imagexpress_plate(
    out_dir: str,
    *,
    variant: Variant = "export",
    wells: list[str],
    sites: int = 4,
    channels: int | tuple[IxChannel, ...] = 2,
    z: int = 3,
    timepoints: int = 1,
    size: int = 256,
    overlap: float = 0.1,
    seed: int = 0,
    plate_name: str = "SynthPlate",
    htd: bool = True,
    z_step_um: float = 2.5,
    interval_s: float = 900.0,
    acquisition_id: int = 1075,
) -> dict[str, Any]:
    """Write a MetaXpress plate (acquisition folder or export) and return its ground truth.

    The truth (also written to ``<out_dir>/ground_truth.json``, outside the image folders) holds
    ``plate_path`` (the folder to point prefect-hcs at), nuclei per well, nominal and true tile
    positions, stage positions per (well, site), z positions, the absent planes and the padded
    files. `channels` is a count (the first of DEFAULT_CHANNELS) or explicit `IxChannel`s.
    """
    specs = _channel_specs(channels, z, timepoints)
    if variant not in ("acquisition", "export"):
        raise ValueError(f"variant must be 'acquisition' or 'export', got {variant!r}")
    if min(sites, z, timepoints) < 1 or size < 32 or not 0 <= overlap < 0.5:
        raise ValueError("need sites, z, timepoints >= 1, size >= 32, 0 <= overlap < 0.5")
    wells = sorted(dict.fromkeys(wells), key=split_well)
    if not wells:
        raise ValueError("need at least one well")
    out = _Writer(out_dir)
    plate_dir = (
        out.root
        if variant == "export"
        else f"{out.root}/{START.date().isoformat()}/{acquisition_id}"
    )
    geometry = _Geometry(sites, size, overlap)
    meta_rng = np.random.default_rng([seed, 1_000_003])
    truth_wells: dict[str, Any] = {}
    padded: list[str] = []
    for well in wells:
        truth_wells[well], pads = _write_well(
            out, plate_dir, well, specs, geometry, variant, z, timepoints, seed, meta_rng,
            plate_name, z_step_um, interval_s,
        )  # fmt: skip
        padded += pads
    if variant == "export" and htd:
        text = htd_text(
            plate_name, wells, geometry.grid, len(specs), z, timepoints, new_guid(meta_rng),
            [c.name for c in specs],
        )  # fmt: skip
        out.write(f"{plate_dir}/{plate_name}.HTD", text.encode())
    truth = {
        "format": "imagexpress",
        "variant": f"MetaXpress {variant}",
        "plate_path": out.fs.unstrip_protocol(plate_dir) if "://" in out_dir else plate_dir,
        "plate_name": plate_name,
        "wells": truth_wells,
        "grid": list(geometry.grid),
        "overlap": overlap,
        "step_px": geometry.step,
        "tile_size": size,
        "channels": [asdict(c) for c in specs],
        "z": z,
        "z_step_um": z_step_um if z > 1 else None,
        "timepoints": timepoints,
        "interval_s": interval_s if timepoints > 1 else None,
        "sites": sites,
        "seed": seed,
        "pixel_size_um": geometry.pixel_um,
        "absent": _absent_truth(specs, z, timepoints, variant),
        "padded": sorted(padded),
        "htd": variant == "export" and htd,
    }
    out.write(f"{out.root}/ground_truth.json", json.dumps(truth, indent=1).encode())
    return truth


def _channel_specs(
    channels: int | tuple[IxChannel, ...], z: int, timepoints: int
) -> tuple[IxChannel, ...]:
    if isinstance(channels, int):
        if not 1 <= channels <= len(DEFAULT_CHANNELS):
            raise ValueError(f"channels must be 1..{len(DEFAULT_CHANNELS)}, got {channels}")
        return DEFAULT_CHANNELS[:channels]
    for c in channels:
        if c.stack == "none" and not c.projection:
            raise ValueError(f"channel {c.name}: stack='none' needs projection=True")
        if c.projection and z == 1:
            raise ValueError(f"channel {c.name}: projections need z > 1")
        if c.timepoints and not set(c.timepoints) <= set(range(1, timepoints + 1)):
            raise ValueError(f"channel {c.name}: timepoints {c.timepoints} outside 1..{timepoints}")
    return tuple(channels)


class _Geometry:
    """The site grid of a well, in pixels and micrometres."""

    def __init__(self, sites: int, size: int, overlap: float) -> None:
        self.sites, self.size = sites, size
        self.grid = site_grid(sites)
        self.step = round(size * (1 - overlap))
        self.scale = size / 256
        self.pixel_um = round(332.8 / size, 4)
        rows, cols = self.grid
        self.canvas = (
            2 * JITTER_PX + (rows - 1) * self.step + size,
            2 * JITTER_PX + (cols - 1) * self.step + size,
        )
        self.nominal = {
            r * cols + c + 1: (JITTER_PX + r * self.step, JITTER_PX + c * self.step)
            for r in range(rows)
            for c in range(cols)
        }

    def stage(self, well: str, site: int) -> tuple[float, float]:
        """Stage (x, y) in µm of a site: well pitch 9 mm, y grows downwards like image rows."""
        row, col = split_well(well)
        ny, nx = self.nominal[site]
        return (
            round(col * 9000.0 + nx * self.pixel_um, 2),
            round(row * 9000.0 + ny * self.pixel_um, 2),
        )


def _write_well(
    out: _Writer,
    plate_dir: str,
    well: str,
    specs: tuple[IxChannel, ...],
    g: _Geometry,
    variant: Variant,
    n_z: int,
    n_t: int,
    seed: int,
    meta_rng: np.random.Generator,
    plate_name: str,
    z_step_um: float,
    interval_s: float,
) -> tuple[dict[str, Any], list[str]]:
    row_i, col_i = split_well(well)
    rng = np.random.default_rng([seed, row_i, col_i])
    true = {
        s: (
            int(y + rng.integers(-JITTER_PX, JITTER_PX + 1)),
            int(x + rng.integers(-JITTER_PX, JITTER_PX + 1)),
        )
        for s, (y, x) in g.nominal.items()
    }
    min_dist = 18.0 * g.scale
    rects = [(y, x, g.size) for y, x in true.values()]
    covered = g.sites * g.size * g.size * (1 - 0.1) ** 2
    count = int(covered / min_dist**2 * rng.uniform(0.15, 0.35))
    centres = place_nuclei(rng, rects, g.canvas, count, min_dist)
    signals = render_signals(rng, g.canvas, centres, len(specs), g.scale)
    focus = (n_z + 1) // 2
    z0 = round(5000.0 + rng.uniform(-40, 40), 1)  # per-well autofocus offset
    padded: list[str] = []
    well_offset = timedelta(seconds=(row_i * 24 + col_i) * 7.0)
    for c, (spec, signal) in enumerate(zip(specs, signals, strict=True), 1):
        stack = {zi: _blur(signal, abs(zi - focus), g.scale) for zi in range(1, n_z + 1)}
        for t in spec.timepoints or range(1, n_t + 1):
            for site in range(1, g.sites + 1):
                y, x = true[site]
                tiles = {
                    zi: tile_noise(rng, p[y : y + g.size, x : x + g.size])
                    for zi, p in stack.items()
                }
                when = START + timedelta(seconds=(t - 1) * interval_s) + well_offset
                base = PlaneFacts(well, site, c, 0, t, g.stage(well, site), z0, when)
                ctx = (out, plate_dir, plate_name, spec, g, variant, n_z, n_t, meta_rng, len(specs))
                padded += _write_site(ctx, base, tiles, z0, z_step_um)
    truth = {
        "nuclei": len(centres),
        "nuclei_centres": [[round(float(y), 2), round(float(x), 2)] for y, x in centres],
        "tile_positions": {str(s): list(p) for s, p in true.items()},
        "nominal_tile_positions": {str(s): list(p) for s, p in g.nominal.items()},
        "stage_positions_um": {str(s): list(g.stage(well, s)) for s in g.nominal},
        "z_positions_um": [round(z0 + (zi - 1) * z_step_um, 3) for zi in range(1, n_z + 1)],
        "canvas_shape": list(g.canvas),
    }
    return truth, padded


def _blur(signal: np.ndarray, dz: int, scale: float) -> np.ndarray:
    return signal if dz == 0 else ndimage.gaussian_filter(signal, 2.0 * scale * dz)


def _write_site(
    ctx: tuple, base: PlaneFacts, tiles: dict[int, np.ndarray], z0: float, dz: float
) -> list[str]:
    """Write one (well, site, channel, timepoint): its planes, projection, thumbs, padding."""
    out, plate_dir, plate_name, spec, g, variant, n_z, n_t, meta_rng, n_c = ctx
    site = base.site if g.sites > 1 else None
    ch = base.channel if n_c > 1 else None
    time_step = timedelta(seconds=0.2 * (base.channel - 1) + 0.05 * (base.site - 1))

    def put(zi: int, pixels: np.ndarray) -> str:
        plane = PlaneFacts(
            base.well, base.site, base.channel, zi, base.t, base.stage,
            round(z0 + (max(zi, 1) - 1) * dz, 3), base.time + time_step,
        )  # fmt: skip
        folder = plane_folder(variant, plate_dir, base.t, zi, n_z, n_t)
        desc = metaseries_description(
            plane_props(plane, spec.name, spec.wavelength_nm, g.size, g.pixel_um)
        )
        path = f"{folder}/{file_name(plate_name, base.well, site, ch, new_guid(meta_rng), False)}"
        out.write(path, metaseries_tiff(pixels, desc))
        thumb = f"{folder}/{file_name(plate_name, base.well, site, ch, new_guid(meta_rng), True)}"
        out.write(thumb, metaseries_tiff(pixels[::8, ::8], None))
        return path

    written: dict[int, str] = {}
    if spec.stack == "all":
        written = {zi: put(zi, tiles[zi]) for zi in range(1, n_z + 1)}
    elif spec.stack == "single":
        written = {1: put(1, tiles[1])}
    projection = put(0, np.max(np.stack(list(tiles.values())), axis=0)) if spec.projection else None
    if variant != "export" or n_z == 1 or spec.stack == "all":
        return []
    source = written.get(1) or projection
    pads = []
    for zi in range(1 if spec.stack == "none" else 2, n_z + 1):
        folder = plane_folder(variant, plate_dir, base.t, zi, n_z, n_t)
        path = f"{folder}/{file_name(plate_name, base.well, site, ch, new_guid(meta_rng), False)}"
        out.copy(source, path)
        pads.append(path)
    return pads


def _absent_truth(
    specs: tuple[IxChannel, ...], n_z: int, n_t: int, variant: Variant
) -> list[list[Any]]:
    """(channel, z, t) of the z-stack no file holds (stack reading), per the journal and layout.

    An export pads single-plane and projection-only channels into every ZStep, so only the
    timepoints a channel skipped are absent there.
    """
    padded_export = variant == "export" and n_z > 1
    out = []
    for c, spec in enumerate(specs, 1):
        if spec.stack == "none" and not padded_export:
            continue  # no stack at all: the channel is only a projection
        for t in range(1, n_t + 1):
            for zi in range(1, n_z + 1):
                taken = (spec.timepoints is None or t in spec.timepoints) and (
                    spec.stack == "all" or zi == 1 or padded_export
                )
                if not taken:
                    out.append([c, zi, t])
    return out
