"""The pixels of a synthetic well, cut into jittered tiles: shared by the vendor generators.

Uses the scene of `synthetic` (blurred nuclei, cytoplasm, background gradient, noise) so every
vendor's plate has the same kind of content and the same ground truth (nuclei counts, true tile
positions). Best focus is the middle plane; planes further away are more blurred.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile
from fsspec.spec import AbstractFileSystem
from scipy import ndimage

from prefect_hcs.formats.wells import split_well
from prefect_hcs.testing import synthetic_scene as scene
from prefect_hcs.testing.synthetic import site_grid


@dataclass(frozen=True)
class TileSpec:
    """Geometry of every well of a synthetic plate."""

    sites: int
    channels: int
    z: int
    timepoints: int
    size: int
    overlap: float
    seed: int
    nuclei_per_well: int | None = None

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the site grid."""
        return site_grid(self.sites)

    @property
    def step(self) -> int:
        """Nominal distance between neighbouring tiles (px)."""
        return round(self.size * (1 - self.overlap))

    @property
    def pixel_um(self) -> float:
        """Pixel size: the same field of view whatever the tile size."""
        return round(332.8 / self.size, 4)

    @property
    def canvas_shape(self) -> tuple[int, int]:
        """(height, width) of the well canvas the tiles are cut from."""
        rows, cols = self.grid
        pad = 2 * scene.JITTER_PX
        return (pad + (rows - 1) * self.step + self.size, pad + (cols - 1) * self.step + self.size)

    def validate(self) -> None:
        """ValueError for a geometry no instrument would produce."""
        if min(self.sites, self.channels, self.z, self.timepoints) < 1 or self.size < 32:
            raise ValueError("need sites, channels, z, timepoints >= 1 and size >= 32")
        if not 0 <= self.overlap < 0.5:
            raise ValueError("overlap must be in [0, 0.5)")


@dataclass(frozen=True)
class Tile:
    """One plane of one site: raster `site` (1 = top-left), `nominal` (y, x) px in the well."""

    site: int
    channel: int
    z: int
    timepoint: int
    pixels: np.ndarray
    nominal: tuple[int, int]


def centre_offset_um(spec: TileSpec, nominal: tuple[int, int]) -> tuple[float, float]:
    """(x, y) of a tile's centre relative to the well centre, µm, Y growing upwards."""
    h, w = spec.canvas_shape
    cy = nominal[0] + spec.size / 2 - h / 2
    cx = nominal[1] + spec.size / 2 - w / 2
    return cx * spec.pixel_um, -cy * spec.pixel_um


def render_well(spec: TileSpec, well: str) -> tuple[dict[str, Any], Iterator[Tile]]:
    """(ground truth of the well, its tiles in site, channel, z, timepoint order)."""
    rows, cols = spec.grid
    row_i, col_i = split_well(well)
    rng = np.random.default_rng([spec.seed, row_i, col_i])
    jitter = scene.JITTER_PX
    nominal = {
        r * cols + c + 1: (jitter + r * spec.step, jitter + c * spec.step)
        for r in range(rows)
        for c in range(cols)
    }
    true = {
        s: (int(y + rng.integers(-jitter, jitter + 1)), int(x + rng.integers(-jitter, jitter + 1)))
        for s, (y, x) in nominal.items()
    }
    scale = spec.size / 256
    min_dist = 18.0 * scale
    covered = spec.sites * spec.size**2 * (1 - spec.overlap) ** 2
    count = spec.nuclei_per_well or int(covered / min_dist**2 * rng.uniform(0.15, 0.35))
    rects = [(y, x, spec.size) for y, x in true.values()]
    centres = scene.place_nuclei(rng, rects, spec.canvas_shape, count, min_dist)
    signals = scene.render_signals(rng, spec.canvas_shape, centres, spec.channels, scale)
    truth = {
        "nuclei": len(centres),
        "tile_positions": {str(s): list(p) for s, p in true.items()},
        "nominal_tile_positions": {str(s): list(p) for s, p in nominal.items()},
        "canvas_shape": list(spec.canvas_shape),
    }
    return truth, _tiles(spec, rng, signals, true, nominal, scale)


def _tiles(spec, rng, signals, true, nominal, scale) -> Iterator[Tile]:
    focus = (spec.z + 1) // 2
    size = spec.size
    for c, signal in enumerate(signals, 1):
        for zi in range(1, spec.z + 1):
            dz = abs(zi - focus)
            plane = signal if dz == 0 else ndimage.gaussian_filter(signal, 2.0 * scale * dz)
            for t in range(1, spec.timepoints + 1):
                for site, (y, x) in sorted(true.items()):
                    pixels = scene.tile_noise(rng, plane[y : y + size, x : x + size])
                    yield Tile(site, c, zi, t, pixels, nominal[site])


def tiff_bytes(pixels: np.ndarray, compression: str | None = "lzw") -> bytes:
    """A single-page TIFF as instruments write them (LZW by default, as Harmony does)."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, compression=compression, metadata=None, software=False)
    return buf.getvalue()


def write_well_tiles(
    fs: AbstractFileSystem,
    spec: TileSpec,
    wells: Sequence[str],
    field_of_site: Mapping[int, int],
    place: Callable[[str, int, Tile], str],
    *,
    field_key: str,
    compression: str | None = "lzw",
) -> dict[str, dict[str, Any]]:
    """Render every well and write each tile as a TIFF; return {well: its ground truth}.

    ``place(well, field, tile)`` returns the tile's path (and records the tile in the vendor's
    index); ``field_of_site`` maps raster sites to the vendor's field numbers, and is kept in each
    well's truth under ``field_key``.
    """
    truth_wells = {}
    for well in wells:
        truth, tiles = render_well(spec, well)
        for tile in tiles:
            path = place(well, field_of_site[tile.site], tile)
            with fs.open(path, "wb") as fh:
                fh.write(tiff_bytes(tile.pixels, compression=compression))
        truth[field_key] = {str(s): f for s, f in field_of_site.items()}
        truth_wells[well] = truth
    return truth_wells
