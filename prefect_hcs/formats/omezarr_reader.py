"""Read an OME-Zarr plate prefect-hcs wrote: one field's pixels at any pyramid level.

Paths come from the metadata (the level's dataset path), never assumed; a field without
multiscales metadata was never finished (see `omezarr_writer`) and reads as missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from prefect_hcs.formats.omezarr_store import field_path, open_store

__all__ = ["read_well_image"]


def read_well_image(
    url: str,
    well: str,
    field: int = 0,
    level: int = 0,
    storage_options: dict | None = None,
) -> np.ndarray:
    """Read one field at one pyramid level as a 5-D (t, c, z, y, x) array.

    The level's array path comes from the multiscales metadata, never assumed.

    Raises:
        FileNotFoundError: no such field, or one without multiscales metadata (half-written).
        IndexError: `level` is not one of the field's levels.
    """
    store = open_store(url, storage_options, read_only=True)
    path = field_path(well, field)
    try:
        group = zarr.open_group(store=store, path=path, mode="r", zarr_format=3)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no field group {path} in {url}") from exc
    attrs: dict[str, Any] = group.attrs.asdict()
    try:
        datasets = attrs["ome"]["multiscales"][0]["datasets"]
    except (KeyError, IndexError, TypeError) as exc:
        raise FileNotFoundError(
            f"field {path} in {url} has no multiscales metadata (missing or half-written)"
        ) from exc
    if not -len(datasets) <= level < len(datasets):
        raise IndexError(f"level {level} out of range: {path} has {len(datasets)} levels")
    array = group[datasets[level]["path"]]
    if not isinstance(array, zarr.Array):
        raise FileNotFoundError(f"level {level} of field {path} in {url} is not an array")
    return np.asarray(array[...])
