"""Channel composites: one image from several channels, e.g. as the stitching reference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .normalize import as_float, cast_like
from .registry import register

__all__ = ["channel_composite"]


def _check_weights(kwargs: dict[str, Any]) -> None:
    weights = kwargs["weights"]
    if weights is None:
        return
    if len(weights) == 0 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights: need non-negative weights with a positive sum, got {weights}")


@register(
    "channel_composite",
    variable_components=("channel",),
    validator=_check_weights,
    reduces=("leading",),
)
def channel_composite(stack: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean over the first axis (channels): (C, ..., Y, X) -> (1, ..., Y, X).

    ``weights`` (one per channel, in stack order) are normalised to sum to 1, so the composite stays
    in the input's intensity range and the dtype is preserved; None weighs channels equally.
    """
    stack = np.asarray(stack)
    if stack.ndim < 3:
        raise ValueError(f"expected (C, ..., Y, X), got shape {stack.shape}")
    n = stack.shape[0]
    if weights is None:
        w = np.full(n, 1.0 / n)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"got {w.size} weights for {n} channels")
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {list(w)}")
        w = w / w.sum()
    data = as_float(stack)
    out = np.tensordot(w.astype(data.dtype), data, axes=(0, 0))[np.newaxis]
    return cast_like(out, stack.dtype)
