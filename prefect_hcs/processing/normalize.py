"""Intensity normalization, and the dtype rule every processing function follows.

The dtype rule: a function returns the dtype it was given (integer images come back as the same
integer type, rounded and clipped to its range; any float image comes back as float32). Pipelines
then never silently grow uint16 plates into float64 ones, and a step's output can always be written
in the plate's own pixel type.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .registry import register

__all__ = ["as_float", "cast_like", "percentile_normalize", "working_dtype"]


def working_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype a function should return for input of ``dtype`` (see the module docstring)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" or dtype == np.bool_:
        return dtype
    return np.dtype(np.float32)


def as_float(a: np.ndarray) -> np.ndarray:
    """``a`` as float32 for arithmetic (float64 kept to avoid a pointless downcast copy)."""
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


def cast_like(result: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """Convert a float result back to the output dtype for input ``dtype``: round and clip ints."""
    out_dtype = working_dtype(dtype)
    if result.dtype == out_dtype:
        return result
    if out_dtype == np.bool_:
        return result > 0.5
    if out_dtype.kind in "iu":
        if result.dtype.kind != "f":
            info = np.iinfo(out_dtype)
            return np.clip(result, info.min, info.max).astype(out_dtype)
        lo, hi = _float_bounds(out_dtype, result.dtype)
        return np.clip(np.rint(result), lo, hi).astype(out_dtype)
    return result.astype(out_dtype)


def _float_bounds(int_dtype: np.dtype[Any], float_dtype: np.dtype[Any]) -> tuple[float, float]:
    """The integer range of ``int_dtype`` as floats of ``float_dtype`` that convert back safely.

    float32(2**31 - 1) rounds up to 2**31, which overflows int32 on conversion; step inward.
    """
    info = np.iinfo(int_dtype)
    ftype = np.dtype(float_dtype).type
    lo, hi = ftype(info.min), ftype(info.max)
    while int(hi) > info.max:
        hi = np.nextafter(hi, ftype(0))
    while int(lo) < info.min:
        lo = np.nextafter(lo, ftype(0))
    return lo, hi


def _check_percentiles(kwargs: dict[str, Any]) -> None:
    low, high, target_max = kwargs["low"], kwargs["high"], kwargs["target_max"]
    if not 0 <= low < high <= 100:
        raise ValueError(f"low/high: need 0 <= low < high <= 100, got low={low}, high={high}")
    if target_max is not None and target_max <= 0:
        raise ValueError(f"target_max: must be > 0, got {target_max}")


@register("percentile_normalize", validator=_check_percentiles)
def percentile_normalize(
    stack: np.ndarray,
    low: float = 1.0,
    high: float = 99.0,
    target_max: float | None = None,
) -> np.ndarray:
    """Rescale intensities so the stack's low..high percentiles map to 0..target_max.

    The percentiles are computed over the WHOLE stack, not per plane, so the tiles of one well keep
    the same scale and stitch without visible seams. Values are clipped to [0, target_max];
    ``target_max`` defaults to the dtype's maximum for integer images and 1.0 for float images.
    A stack with no contrast between the percentiles maps to 0.
    """
    stack = np.asarray(stack)
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    out_dtype = working_dtype(stack.dtype)
    if target_max is None:
        target_max = float(np.iinfo(out_dtype).max) if out_dtype.kind in "iu" else 1.0
    elif out_dtype.kind in "iu" and target_max > np.iinfo(out_dtype).max:
        raise ValueError(f"target_max={target_max} exceeds the range of {out_dtype}")

    p_lo, p_hi = np.percentile(stack, [low, high])
    span = float(p_hi) - float(p_lo)
    if span <= 0 or not np.isfinite(span):
        return np.zeros(stack.shape, dtype=out_dtype)
    scaled = (as_float(stack) - np.float32(p_lo)) * np.float32(target_max / span)
    np.clip(scaled, 0.0, target_max, out=scaled)
    return cast_like(scaled, stack.dtype)
