"""Per-object measurements: one row per segmented object, shape and intensity in every channel.

What CellProfiler's MeasureObjectSizeShape / MeasureObjectIntensity give per cell, computed with
`skimage.measure.regionprops_table`: area, centroid, bounding box, equivalent diameter,
eccentricity, solidity, perimeter, major/minor axis length, orientation; and per channel the
mean, min, max and integrated (sum) intensity inside the object. Objects come from the nucleus
segmentation of one channel (`segmentation.label_nuclei`) or from a label image given as input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.measure import regionprops_table

from .registry import register
from .segmentation import Threshold, _check_segmentation_kwargs, label_nuclei

__all__ = ["SHAPE_PROPERTIES", "measure_labels", "measure_objects"]

#: Shape columns of every object row (regionprops names; centroid/bbox expand to -0, -1, ...).
SHAPE_PROPERTIES: tuple[str, ...] = (
    "label",
    "area",
    "centroid",
    "bbox",
    "equivalent_diameter_area",
    "eccentricity",
    "solidity",
    "perimeter",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
)
_RENAME = {
    "centroid-0": "centroid_y",
    "centroid-1": "centroid_x",
    "bbox-0": "bbox_min_y",
    "bbox-1": "bbox_min_x",
    "bbox-2": "bbox_max_y",
    "bbox-3": "bbox_max_x",
    "equivalent_diameter_area": "equivalent_diameter",
}


def measure_labels(
    labels: np.ndarray, channels: np.ndarray, channel_numbers: list[int] | None = None
) -> list[dict[str, Any]]:
    """One row per object of a 2-D ``labels`` image, intensities from ``channels`` (C, Y, X).

    Columns: ``label``, ``area`` (px), ``centroid_y/x``, ``bbox_min_y/x``, ``bbox_max_y/x``
    (exclusive), ``equivalent_diameter``, ``eccentricity``, ``solidity``, ``perimeter``,
    ``axis_major_length``, ``axis_minor_length``, ``orientation`` (rad), and per channel ``n``
    (1-based, or ``channel_numbers``) ``intensity_mean_c<n>``, ``intensity_min_c<n>``,
    ``intensity_max_c<n>``, ``intensity_sum_c<n>``.
    """
    labels = np.asarray(labels)
    channels = np.asarray(channels)
    if labels.ndim != 2 or channels.ndim != 3 or channels.shape[1:] != labels.shape:
        raise ValueError(
            f"need labels (Y, X) and channels (C, Y, X) of the same size, got {labels.shape} "
            f"and {channels.shape}"
        )
    numbers = channel_numbers or list(range(1, channels.shape[0] + 1))
    table = regionprops_table(labels.astype(np.int32, copy=False), properties=SHAPE_PROPERTIES)
    cols: dict[str, np.ndarray] = {_RENAME.get(k, k): np.asarray(v) for k, v in table.items()}
    for n, plane in zip(numbers, channels, strict=True):
        stats = regionprops_table(
            labels.astype(np.int32, copy=False),
            intensity_image=plane.astype(np.float64, copy=False),
            properties=("intensity_mean", "intensity_min", "intensity_max"),
        )
        cols[f"intensity_mean_c{n}"] = stats["intensity_mean"]
        cols[f"intensity_min_c{n}"] = stats["intensity_min"]
        cols[f"intensity_max_c{n}"] = stats["intensity_max"]
        cols[f"intensity_sum_c{n}"] = stats["intensity_mean"] * cols["area"]
    count = len(cols["label"])
    return [{k: _py(v[i]) for k, v in cols.items()} for i in range(count)]


def _py(value: Any) -> Any:
    """numpy scalar → plain int/float (tables are written as CSV/Parquet, compared exactly)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    _check_segmentation_kwargs(kwargs)
    if kwargs["label_channel"] < 1:
        raise ValueError(
            f"label_channel: must be >= 1 (channels are 1-based), got {kwargs['label_channel']}"
        )


@register(
    "measure_objects",
    variable_components=("channel",),
    special_outputs=("objects",),
    validator=_check_kwargs,
)
def measure_objects(
    stack: np.ndarray,
    label_channel: int = 1,
    sigma: float = 1.5,
    min_area: int = 20,
    max_area: int | None = None,
    threshold: Threshold = "otsu",
    split_touching: bool = True,
    background_radius: int | None = 25,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Segment nuclei in ``label_channel`` and measure every object in every channel.

    The stack is (C, ..., Y, X) (the step stacks channels); the image passes through unchanged.
    Special output "objects": one row per object per plane (see `measure_labels` for columns),
    plus ``object_plane`` when the stack has more than one plane per channel. The label image
    (uint32, shape (1, ..., Y, X)) is returned as "nuclei"; when this is the pipeline's last
    step the run writes it as the NGFF label image ``labels/nuclei`` of each field.
    Segmentation kwargs are those of `count_nuclei`.
    """
    stack = np.asarray(stack)
    if stack.ndim < 3:
        raise ValueError(f"expected (channel, ..., Y, X), got shape {stack.shape}")
    if label_channel > stack.shape[0]:
        raise ValueError(
            f"label_channel {label_channel} but the stack has {stack.shape[0]} channels"
        )
    per_channel = stack.reshape(stack.shape[0], -1, *stack.shape[-2:])
    label_planes = np.zeros(per_channel.shape[1:], dtype=np.uint32)
    rows: list[dict[str, Any]] = []
    for p in range(per_channel.shape[1]):
        planes = per_channel[:, p]
        labels = label_nuclei(
            planes[label_channel - 1],
            sigma, min_area, max_area, threshold, split_touching, background_radius,
        )  # fmt: skip
        label_planes[p] = labels
        for row in measure_labels(labels, planes):
            rows.append({"object_plane": p, **row} if per_channel.shape[1] > 1 else row)
    nuclei = label_planes.reshape((1, *stack.shape[1:]))
    return stack, {"objects": rows, "nuclei": nuclei}
