"""Projections: collapse the first leading axis (typically z) to length 1."""

from __future__ import annotations

import numpy as np

from .normalize import as_float, cast_like
from .registry import register

__all__ = ["max_projection", "mean_projection"]


def _check_stack(stack: np.ndarray) -> np.ndarray:
    stack = np.asarray(stack)
    if stack.ndim < 3:
        raise ValueError(
            f"expected (N, ..., Y, X) with at least one leading axis, got {stack.shape}"
        )
    return stack


@register("max_projection", variable_components=("z",), reduces=("leading",))
def max_projection(stack: np.ndarray) -> np.ndarray:
    """Maximum over the first axis, kept as length 1: (Z, ..., Y, X) -> (1, ..., Y, X).

    Only the first axis is reduced so a step stacking e.g. ("z", "channel") projects each channel.
    """
    stack = _check_stack(stack)
    return cast_like(stack.max(axis=0, keepdims=True), stack.dtype)


@register("mean_projection", variable_components=("z",), reduces=("leading",))
def mean_projection(stack: np.ndarray) -> np.ndarray:
    """Mean over the first axis, kept as length 1 (integer input is rounded back to its dtype)."""
    stack = _check_stack(stack)
    mean = as_float(stack).mean(axis=0, keepdims=True, dtype=np.float64)
    return cast_like(mean, stack.dtype)
