"""Background subtraction, one 2-D plane at a time.

Both methods estimate the background as a lower envelope of the image that objects smaller than the
structuring element (disk or ball) cannot push up, and subtract it. Large radii are slow at full
resolution, so both can estimate the (smooth) background on a block-averaged plane and upsample it;
the subtraction itself is always done at full resolution. The background is capped by the plane
itself, so the result is never negative.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage import morphology, restoration, transform

from .normalize import as_float, cast_like
from .registry import register

__all__ = ["estimate_background", "rolling_ball_background", "tophat_background"]


def _downsample(plane: np.ndarray, factor: int) -> np.ndarray:
    """Block mean by ``factor``; edges padded by replication so no zeros leak into the estimate."""
    if factor == 1:
        return plane
    h, w = plane.shape
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        plane = np.pad(plane, ((0, ph), (0, pw)), mode="edge")
    hh, ww = plane.shape
    return plane.reshape(hh // factor, factor, ww // factor, factor).mean(axis=(1, 3))


def _upsample(small: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsample of a block-mean image back to ``shape`` (pixel centres aligned)."""
    if factor == 1:
        return small
    big = transform.resize(
        small,
        (small.shape[0] * factor, small.shape[1] * factor),
        order=1,
        mode="edge",
        anti_aliasing=False,
        preserve_range=True,
    )
    return big[: shape[0], : shape[1]]


def _opening_background(plane: np.ndarray, radius: float) -> np.ndarray:
    """Grey opening with a disk. skimage's "crosses" decomposition approximates the disk by a
    sequence of small footprints: ~6x faster than the exact disk at radius 15 (measured)."""
    r = max(1, int(round(radius)))
    footprint = morphology.disk(r, decomposition="crosses") if r > 2 else morphology.disk(r)
    return morphology.opening(plane, footprint)


def _rolling_ball_background(plane: np.ndarray, radius: float, factor: int) -> np.ndarray:
    """Sternberg/ImageJ rolling ball: the envelope of a ball rolled under the intensity surface.

    skimage's `rolling_ball` returns the height of the ball's *apex* (a grey erosion with the ball),
    which sits below the surface wherever it slopes (~10 counts at a slope of 0.5/px for radius 25).
    Rolling the ball back over that (the matching dilation, via negation) completes the grey
    opening, whose result touches the surface and follows gradients. With ``factor`` > 1 the ball is
    shrunk spatially but keeps its height ``radius`` (intensity semi-axis), so the estimate
    approximates the full-resolution ball rather than a smaller one.
    """
    r = max(1, int(round(radius / factor)))
    kernel = restoration.ellipsoid_kernel((2 * r + 1, 2 * r + 1), radius)
    eroded = restoration.rolling_ball(plane, kernel=kernel)
    return -restoration.rolling_ball(-eroded, kernel=kernel)


def estimate_background(
    plane: np.ndarray, method: str, radius: float, downsample: int = 1
) -> np.ndarray:
    """Background estimate (float, same shape) of one 2-D plane, capped at the plane itself."""
    if plane.ndim != 2:
        raise ValueError(f"expected a 2-D plane, got shape {plane.shape}")
    if downsample < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    data = as_float(plane)
    small = _downsample(data, downsample)
    if method == "tophat":
        bg_small = _opening_background(small, radius / downsample)
    elif method == "rolling_ball":
        bg_small = _rolling_ball_background(small, radius, downsample)
    else:
        raise ValueError(f"unknown background method {method!r}")
    background = _upsample(bg_small, downsample, plane.shape)
    return np.minimum(background, data)


def _per_plane(stack: np.ndarray, method: str, radius: float, downsample: int) -> np.ndarray:
    stack = np.asarray(stack)
    if stack.ndim < 2:
        raise ValueError(f"expected (..., Y, X), got shape {stack.shape}")
    planes = stack.reshape(-1, *stack.shape[-2:])
    out = np.empty(planes.shape, dtype=np.float32)
    for i, plane in enumerate(planes):
        data = as_float(plane)
        out[i] = data - estimate_background(data, method, radius, downsample)
    return cast_like(out.reshape(stack.shape), stack.dtype)


def _check_radius(kwargs: dict[str, Any]) -> None:
    if kwargs["radius"] <= 0:
        raise ValueError(f"radius: must be > 0, got {kwargs['radius']}")
    if kwargs["downsample"] < 1:
        raise ValueError(f"downsample: must be >= 1, got {kwargs['downsample']}")


@register("tophat_background", validator=_check_radius)
def tophat_background(stack: np.ndarray, radius: int = 15, downsample: int = 1) -> np.ndarray:
    """White top-hat per plane: subtract a grey opening with a disk of ``radius`` px.

    Keeps objects narrower than the disk and removes smooth background (illumination gradients,
    out-of-focus haze). Pick ``radius`` larger than the biggest object to keep. ``downsample`` > 1
    estimates the background on a block-averaged plane (faster, slightly smoother background).
    """
    return _per_plane(stack, "tophat", radius, downsample)


@register("rolling_ball_background", validator=_check_radius)
def rolling_ball_background(stack: np.ndarray, radius: int = 25, downsample: int = 2) -> np.ndarray:
    """Rolling-ball background subtraction per plane (skimage.restoration.rolling_ball).

    Like ImageJ's "Subtract Background": a ball of ``radius`` rolled under the intensity surface.
    As in ImageJ, the radius is in pixels AND intensity units, so the ball follows gentle gradients
    (a few counts/px) but not steep ones; rescale intensities first for very steep backgrounds.
    The ball is rolled on a plane block-averaged by ``downsample`` (at full resolution it is slow:
    ~0.9 s per 512^2 plane at radius 25) and the background upsampled back to full resolution.
    """
    return _per_plane(stack, "rolling_ball", radius, downsample)
