"""Illumination (flat-field) correction from the whole plate: estimate once, apply per well.

Uneven illumination multiplies every field of a channel by the same smooth pattern F (vignetting)
on top of a camera offset D: ``I = D + F * S``. Over many fields the objects land at random
places, so the per-pixel **median over fields** of ``I - D`` is ``F`` times the typical
(background-dominated) signal, a constant; smoothed with a wide Gaussian and divided by its mean
it is the flat-field. This is the classic retrospective multi-image estimate (median of many
fields); BaSiC (basicpy) also fits a spatially varying dark-field, but basicpy 2 needs torch and
numpy < 2, which do not fit this project's pins, so the dark-field here is the constant camera
offset ``dark_offset`` (the instrument's documented offset, e.g. 100 for many sCMOS cameras).

`estimate_flatfield` is the plate-level part (run once per plate, on all wells or a sample);
`illumination_correct` is the per-well function: ``(I - D) / F`` per channel, with F injected
by the executor as the metadata input ``illumination``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .registry import register

__all__ = ["estimate_flatfield", "illumination_correct"]

#: Planes are block-averaged to at most this side before the median (speed; F is smooth).
_WORK_SIDE = 256


def _block_mean(plane: np.ndarray, k: int) -> np.ndarray:
    y, x = (plane.shape[0] // k) * k, (plane.shape[1] // k) * k
    p = plane[:y, :x].astype(np.float64)
    return p.reshape(y // k, k, x // k, k).mean(axis=(1, 3))


def estimate_flatfield(
    planes: Iterable[np.ndarray], dark_offset: float = 0.0, smooth: float = 0.06
) -> np.ndarray:
    """Flat-field (float32, mean 1, the planes' shape) from fields of one channel.

    Median over planes of ``plane - dark_offset`` per pixel (on planes block-averaged to at most
    256 px a side), Gaussian-smoothed with sigma = ``smooth`` × the shorter side, normalised to
    mean 1 and interpolated back to full size. Needs planes of one shape; more planes (fields of
    many wells) give a better estimate.
    """
    planes = list(planes)
    if not planes:
        raise ValueError("no planes to estimate a flat-field from")
    shape = planes[0].shape
    if any(p.shape != shape for p in planes):
        raise ValueError("every plane of a channel must have the same shape")
    k = max(1, int(np.ceil(max(shape) / _WORK_SIDE)))
    small = np.stack([_block_mean(p, k) for p in planes]) - float(dark_offset)
    median = np.median(small, axis=0)
    sigma = max(1.0, smooth * min(median.shape))
    flat = ndi.gaussian_filter(median, sigma, mode="nearest")
    if not np.all(flat > 0):
        raise ValueError(
            "the flat-field is not positive everywhere: is dark_offset above the images' signal?"
        )
    zoom = (shape[0] / flat.shape[0], shape[1] / flat.shape[1])
    full = ndi.zoom(flat, zoom, order=1, mode="nearest", grid_mode=True)
    full = full[: shape[0], : shape[1]]
    if full.shape != shape:
        full = np.pad(full, [(0, shape[0] - full.shape[0]), (0, shape[1] - full.shape[1])], "edge")
    return (full / full.mean()).astype(np.float32)


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    if kwargs["dark_offset"] < 0:
        raise ValueError(f"dark_offset: must be >= 0, got {kwargs['dark_offset']}")
    if not 0 < kwargs["smooth"] <= 0.5:
        raise ValueError(f"smooth: must be in (0, 0.5], got {kwargs['smooth']}")
    if kwargs["sample_wells"] is not None and kwargs["sample_wells"] < 1:
        raise ValueError(
            f"sample_wells: must be >= 1 or None (all wells), got {kwargs['sample_wells']}"
        )


@register(
    "illumination_correct",
    variable_components=("channel",),
    metadata_inputs=("illumination",),
    validator=_check_kwargs,
)
def illumination_correct(
    stack: np.ndarray,
    illumination: dict[str, Any],
    dark_offset: float = 0.0,
    smooth: float = 0.06,
    sample_wells: int | None = None,
) -> np.ndarray:
    """Flat-field correction per channel with a flat-field estimated from the whole plate.

    A plate-level step: before any well runs, the flat-field of every channel is estimated once
    from the source planes of all wells (or ``sample_wells`` of them, spread over the plate) by
    `estimate_flatfield` with ``dark_offset`` and ``smooth``; each well then gets
    ``(I - dark_offset) / flatfield`` as float32. The stack is (channel, ..., Y, X) in the
    plate's channel order; ``illumination`` is injected by the executor.
    """
    stack = np.asarray(stack)
    flats = illumination["flatfield"]
    if stack.shape[0] != flats.shape[0] or stack.shape[-2:] != flats.shape[-2:]:
        raise ValueError(
            f"the plate's flat-field is {flats.shape} (channel, y, x) but the step's stack is "
            f"{stack.shape}: put illumination_correct before steps that change channels or size"
        )
    flat = flats.reshape((flats.shape[0],) + (1,) * (stack.ndim - 3) + flats.shape[-2:])
    return ((stack.astype(np.float32) - np.float32(dark_offset)) / flat).astype(np.float32)
