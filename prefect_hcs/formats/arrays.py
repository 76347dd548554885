"""Array helpers the output writers share; numpy only, so importing it costs nothing.

A well's fields all have the plate's field shape in the output, while a step may return planes
a few pixels larger or smaller (stitching, registration crops): `fit_yx` pads or crops them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_yx"]


def fit_yx(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pad (zeros, bottom/right) or crop the last two axes to `shape`."""
    y, x = array.shape[-2:]
    ty, tx = shape
    if (y, x) == (ty, tx):
        return array
    out = np.zeros(array.shape[:-2] + (ty, tx), dtype=array.dtype)
    out[..., : min(y, ty), : min(x, tx)] = array[..., : min(y, ty), : min(x, tx)]
    return out
