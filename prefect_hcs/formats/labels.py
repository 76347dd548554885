"""NGFF labels inside a field image: ``<row>/<col>/<field>/labels/<name>`` with ``image-label``.

A label image (0 = background, objects 1..n) is written next to the field's intensity levels, as
the NGFF spec's labels collection: the ``labels`` group lists its label images, each a multiscale
image with the same axes and scales as its parent plus ``image-label`` metadata (``colors`` give
each object a stable colour). Lower levels are
nearest-neighbour downsampled (every second pixel), never averaged: label values are identities.
Viewers (napari-ome-zarr) and ome-zarr-py's reader find them with the field image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from .omezarr import NGFF_VERSION, OmeZarrPlateWriter, field_path, pyramid_shapes

__all__ = ["read_labels", "write_labels"]

_GOLDEN = 0.618033988749895


def _colour(label: int) -> list[int]:
    """A stable, well-spread RGBA colour per label value (golden-ratio hue walk)."""
    h = (label * _GOLDEN) % 1.0
    i, f = int(h * 6), (h * 6) % 1.0
    q, t = int(255 * (1 - f)), int(255 * f)
    rgb = [(255, t, 0), (q, 255, 0), (0, 255, t), (0, q, 255), (t, 0, 255), (255, 0, q)][i % 6]
    return [*rgb, 255]


def _nearest_down(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Every second pixel in y and x, cropped/padded to the pyramid's shape (edge pixel)."""
    out = data[..., ::2, ::2]
    pad = [(0, 0)] * (out.ndim - 2) + [
        (0, shape[-2] - out.shape[-2]),
        (0, shape[-1] - out.shape[-1]),
    ]
    if any(p[1] for p in pad):
        out = np.pad(out, pad, mode="edge")
    return out[..., : shape[-2], : shape[-1]]


def write_labels(
    writer: OmeZarrPlateWriter, well: str, field: int, name: str, labels: np.ndarray
) -> str:
    """Write ``labels`` (t, 1, z, y, x) or (y, x) as label image ``name`` of an existing field.

    The field image must already be written (its multiscales give the levels, axes and scales).
    Returns the label image's URL. Raises ValueError when the shapes disagree.
    """
    path = field_path(well, field)
    parent = zarr.open_group(store=writer.store, path=path, mode="r+", zarr_format=3)
    ome: Any = parent.attrs.asdict()["ome"]  # zarr types attributes as any JSON value
    ms: dict[str, Any] = ome["multiscales"][0]
    level0 = parent[ms["datasets"][0]["path"]]
    if not isinstance(level0, zarr.Array):
        raise ValueError(f"{path}: the field's first level is not an array")
    shape0 = level0.shape
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None, None, None]
    want = (shape0[0], 1, shape0[2], shape0[3], shape0[4])
    if labels.shape != want:
        raise ValueError(f"labels for {path} have shape {labels.shape}; the field needs {want}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels for {path} must be integers, got {labels.dtype}")
    labels = labels.astype(np.uint32, copy=False)
    group = parent.require_group("labels")
    image = group.create_group(name, overwrite=True)
    datasets = []
    level = labels
    for i, shape in enumerate(pyramid_shapes(labels.shape, len(ms["datasets"]))):
        if i:
            level = _nearest_down(level, shape)
        arr = image.create_array(
            name=str(i), shape=shape, dtype=np.uint32, chunks=(1, 1, 1, *shape[-2:]),
            dimension_names=[a["name"] for a in ms["axes"]], fill_value=0,
        )  # fmt: skip
        arr[...] = level
        transforms = ms["datasets"][i]["coordinateTransformations"]
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
    values = [int(v) for v in np.unique(labels) if v]
    image.attrs.put(
        {
            "ome": {
                "version": NGFF_VERSION,
                "multiscales": [
                    {
                        "name": name,
                        "axes": ms["axes"],
                        "datasets": datasets,
                        "type": "nearest",
                        "metadata": {"method": "every second pixel (labels are identities)"},
                    }
                ],
                # "source" (optional in NGFF) is left out: yaozarrs resolves "../../" without
                # the URL's protocol and fails on non-local stores (memory://, s3://).
                "image-label": {
                    "version": NGFF_VERSION,
                    "colors": [{"label-value": v, "rgba": _colour(v)} for v in values],
                },
            }
        }
    )
    existing: Any = group.attrs.asdict().get("ome") or {}
    names = list(dict.fromkeys([*existing.get("labels", []), name]))
    group.attrs.put({"ome": {"version": NGFF_VERSION, "labels": names}})
    return f"{writer.url.rstrip('/')}/{path}/labels/{name}"


def read_labels(url: str, well: str, field: int, name: str, level: int = 0) -> np.ndarray:
    """The label image ``name`` of a field at pyramid ``level`` as (t, 1, z, y, x) uint32."""
    root = zarr.open_group(url, mode="r")
    arr: Any = root[f"{field_path(well, field)}/labels/{name}/{level}"]
    return np.asarray(arr[...])
