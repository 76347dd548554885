"""One field image of an OME-Zarr plate: its pyramid levels and its NGFF image metadata.

Pixels: `downsample2` (2x2 block mean, edge-padded) and `pyramid_shapes` decide the levels. Metadata:
`image_axes` (through ome-zarr-py's validating `Axes`), `level_transforms` (scale and translation
in the axes' units), `rendering` (the ``omero`` block: channel labels, colours, windows) and
`compressors` (the zarr codecs a run's zarr settings name); `image_metadata` assembles the
field group's ``ome`` attributes. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from ome_zarr.axes import Axes
from ome_zarr.format import FormatV05
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from prefect_hcs.formats.omezarr_store import AXES, NGFF_VERSION
from prefect_hcs.formats.physical import channel_color

__all__ = [
    "SPACE_UNIT",
    "TIME_UNIT",
    "compressors",
    "downsample2",
    "image_axes",
    "image_metadata",
    "level_transforms",
    "pyramid_shapes",
    "rendering",
]

#: Axis units written when the value is known (NGFF / UDUNITS-2 names).
SPACE_UNIT = "micrometer"
TIME_UNIT = "second"


def downsample2(data: np.ndarray) -> np.ndarray:
    """Mean of 2x2 blocks over the last two axes, same dtype.

    Odd sizes are padded by repeating the edge so that the last row/column averages real pixels
    (zero padding would darken the border); the output size is ceil(n / 2).
    """
    y, x = data.shape[-2:]
    pad = [(0, 0)] * (data.ndim - 2) + [(0, y % 2), (0, x % 2)]
    if y % 2 or x % 2:
        data = np.pad(data, pad, mode="edge")
    y2, x2 = data.shape[-2] // 2, data.shape[-1] // 2
    blocks = data.reshape(*data.shape[:-2], y2, 2, x2, 2)
    acc = np.float32 if data.dtype.itemsize <= 2 and data.dtype.kind in "biu" else np.float64
    mean = blocks.mean(axis=(-3, -1), dtype=acc)
    if np.issubdtype(data.dtype, np.integer):
        mean = np.rint(mean)
    elif data.dtype == bool:
        mean = mean >= 0.5
    return mean.astype(data.dtype, copy=False)


def pyramid_shapes(
    shape: Sequence[int], n_levels: int | None = None, min_side: int = 256
) -> list[tuple[int, ...]]:
    """Level shapes: halve y,x until the smaller side is <= min_side, or exactly n_levels levels."""
    shapes = [tuple(int(s) for s in shape)]
    while True:
        y, x = shapes[-1][-2:]
        if n_levels is not None:
            if len(shapes) >= n_levels or min(y, x) <= 1:
                break
        elif min(y, x) <= min_side:
            break
        shapes.append((*shapes[-1][:-2], math.ceil(y / 2), math.ceil(x / 2)))
    return shapes


def _dtype_range(dtype: np.dtype) -> tuple[float, float]:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0  # bool and float: widened to the data range by the caller


def rendering(
    data: np.ndarray, channel_names: Sequence[str], colors: Sequence[str] | None = None
) -> dict:
    """The ``omero`` rendering block: per channel its label, colour (RRGGBB) and data window."""
    lo_all, hi_all = _dtype_range(data.dtype)
    channels = []
    for i, name in enumerate(channel_names):
        plane = data[:, i]
        lo, hi = (float(plane.min()), float(plane.max())) if plane.size else (lo_all, hi_all)
        if not np.issubdtype(data.dtype, np.integer):
            lo_all, hi_all = min(lo_all, lo), max(hi_all, hi)
        channels.append(
            {
                "label": str(name),
                "color": colors[i] if colors else channel_color(str(name), None, i),
                "window": {"start": lo, "end": hi, "min": lo_all, "max": hi_all},
                "active": True,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
            }
        )
    return {
        "channels": channels,
        "rdefs": {"model": "color", "defaultT": 0, "defaultZ": int(data.shape[2] // 2)},
    }


def image_axes(
    pixel_size_um: float | None, z_step_um: float | None, time_interval_s: float | None = None
) -> list[dict]:
    """NGFF axes (through ome-zarr-py's validating `Axes`), with a unit only where it is known."""
    units = {"t": TIME_UNIT} if time_interval_s is not None else {}
    if z_step_um is not None:
        units["z"] = SPACE_UNIT
    if pixel_size_um is not None:
        units.update(y=SPACE_UNIT, x=SPACE_UNIT)
    return Axes(list(AXES), axes_units=units, fmt=FormatV05()).to_list()


def level_transforms(
    level: int,
    pixel_size_um: float | None,
    z_step_um: float | None,
    time_interval_s: float | None,
    translation_um: tuple[float, float] | None,
) -> list[dict]:
    """Scale and translation of one pyramid level, in the axes' units (pixels when unknown).

    ``translation_um`` (y, x) places the field where the microscope took it; a 2x2 mean also puts
    the pixel centre half a (coarse) pixel in.
    """
    px = 1.0 if pixel_size_um is None else float(pixel_size_um)
    pz = 1.0 if z_step_um is None else float(z_step_um)
    dt = 1.0 if time_interval_s is None else float(time_interval_s)
    f = 2**level
    ty, tx = translation_um if translation_um is not None else (0.0, 0.0)
    half = px * (f - 1) / 2
    return [
        {"type": "scale", "scale": [dt, 1.0, pz, px * f, px * f]},
        {"type": "translation", "translation": [0.0, 0.0, 0.0, ty + half, tx + half]},
    ]


def compressors(compressor: str, level: int) -> list:
    """Zarr v3 codecs for a compressor name ('zstd', 'blosc' or 'none') at `level`.

    Raises:
        ValueError: an unknown compressor name.
    """
    if compressor == "zstd":
        return [ZstdCodec(level=level)]
    if compressor == "blosc":
        return [BloscCodec(cname="zstd", clevel=level, shuffle=BloscShuffle.bitshuffle)]
    if compressor in ("none", ""):
        return []
    raise ValueError(f"unknown compressor {compressor!r}: use 'zstd', 'blosc' or 'none'")


def image_metadata(
    name: str,
    datasets: list[dict],
    data: np.ndarray,
    channel_names: Sequence[str],
    channel_colors: Sequence[str] | None,
    pixel_size_um: float | None,
    z_step_um: float | None,
    time_interval_s: float | None,
) -> dict:
    """The ``ome`` attributes of a field group: its multiscales and rendering metadata.

    `datasets` are the levels written (path and coordinateTransformations each); the
    transformations are checked by ome-zarr-py's format object before anything is returned.

    Raises:
        ValueError: inconsistent coordinate transformations (from ome-zarr-py).
    """
    FormatV05().validate_coordinate_transformations(
        len(AXES), len(datasets), [d["coordinateTransformations"] for d in datasets]
    )
    multiscale = {
        "name": name,
        "axes": image_axes(pixel_size_um, z_step_um, time_interval_s),
        "datasets": datasets,
        "type": "mean",
        "metadata": {"method": "2x2 block mean, edge-padded for odd sizes"},
    }
    return {
        "version": NGFF_VERSION,
        "multiscales": [multiscale],
        "omero": rendering(data, channel_names, channel_colors),
    }
