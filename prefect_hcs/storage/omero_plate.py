"""OMERO plate handler: an OMERO Plate -> the shared `PlateLayout` (format "omero").

The layout is read from OMERO's object model, not from file names: Well (0-based row/column) ->
WellSample i (site i + 1) -> Image sizes Z/C/T/Y/X. Every `ImageRef.path` is the plane's virtual
path in the ``omero`` filesystem (``plate_<id>/A01/s001/A01_s001_w1_z001_t001.tif``), so the
runtime reads pixels with ``fs.read_plane_array(ref.path)`` or as a TIFF through ``fs.open``.

Grid, tile overlap, pixel size and channel names come from the plate's MapAnnotation in namespace
``org.prefect-hcs/plate`` (keys ``grid_rows``, ``grid_cols``, ``overlap``, ``pixel_size_um``,
``channel_names`` as a JSON list or comma-separated), when present; channel names otherwise come
from the images' channel labels.
"""

from __future__ import annotations

import json
from typing import Any

from prefect_hcs.formats.layout import ImageRef, PlateError, PlateLayout
from prefect_hcs.formats.wells import well_id
from prefect_hcs.storage.omero_errors import OmeroNotFound, OmeroPermissionDenied
from prefect_hcs.storage.omero_fs import OmeroFileSystem
from prefect_hcs.storage.omero_paths import PLATE_NS, PROTOCOL, parse, plane_path, plate_path


def open_omero_plate(url: str, storage_options: dict[str, Any] | None = None) -> PlateLayout:
    """Discover an OMERO plate's layout (no pixels read). `url` is ``omero://plate_<id>``."""
    p = parse(url)
    if p.kind != "plate":
        raise PlateError(
            f"{url!r} names part of a plate; open the plate itself: omero://plate_<id>"
        )
    fs = OmeroFileSystem(**(storage_options or {}))
    where = f"{PROTOCOL}://{plate_path(p.plate_id)}"
    try:
        plate = fs.plate(p.plate_id)
        plate_map = fs.plate_map(p.plate_id)
    except OmeroPermissionDenied as exc:
        raise OmeroPermissionDenied(
            f"cannot open {where} as OMERO user {fs.adapter.user!r}: {exc}"
        ) from exc
    except OmeroNotFound as exc:
        raise OmeroNotFound(
            f"OMERO plate {p.plate_id} ({where}) not found for user {fs.adapter.user!r}: check "
            f"the plate id in OMERO.web (Plate ID) and that the user can see it. ({exc})"
        ) from exc

    wells = [w for w in plate.wells if w.images]
    if not wells:
        raise PlateError(f"OMERO plate {where} ({plate.name!r}) has no wells with images")
    first = wells[0].images[0]
    dims = (first.size_z, first.size_c, first.size_t, first.size_y, first.size_x, first.dtype)
    n_sites = len(wells[0].images)
    for well in wells:
        name = well_id(well.row, well.column)
        if len(well.images) != n_sites:
            raise PlateError(
                f"{where}: well {name} has {len(well.images)} sites, well "
                f"{well_id(wells[0].row, wells[0].column)} has {n_sites}; every well must have "
                "the same number of fields"
            )
        for img in well.images:
            got = (img.size_z, img.size_c, img.size_t, img.size_y, img.size_x, img.dtype)
            if got != dims:
                raise PlateError(
                    f"{where}: image {img.image_id} of well {name} has (Z, C, T, Y, X, dtype) = "
                    f"{got}, the plate's first image {dims}; all images must match"
                )

    size_z, size_c, size_t, size_y, size_x, dtype = dims
    channels = tuple(range(1, size_c + 1))
    names = _channel_names(plate_map.get("channel_names")) or list(first.channel_names)
    images = tuple(
        ImageRef(
            well=well_id(w.row, w.column),
            site=site,
            channel=c,
            z=z,
            timepoint=t,
            path=plane_path(p.plate_id, well_id(w.row, w.column), site, c, z, t),
        )
        for w in wells
        for site in range(1, n_sites + 1)
        for t in range(1, size_t + 1)
        for c in channels
        for z in range(1, size_z + 1)
    )
    grid = _grid(plate_map, where)
    return PlateLayout(
        plate_id=plate_path(p.plate_id),
        format="omero",
        url=where,
        wells=tuple(well_id(w.row, w.column) for w in wells),
        sites=tuple(range(1, n_sites + 1)),
        channels=channels,
        z_planes=tuple(range(1, size_z + 1)),
        timepoints=tuple(range(1, size_t + 1)),
        grid=grid,
        tile_overlap=_float(plate_map, "overlap", where),
        pixel_size_um=_float(plate_map, "pixel_size_um", where),
        channel_names={c: n for c, n in zip(channels, names, strict=False) if n},
        image_shape=(size_y, size_x),
        dtype=dtype,
        images=images,
    )


def _channel_names(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw.split(",")
    return [str(v).strip() for v in value] if isinstance(value, list) else []


def _grid(plate_map: dict[str, str], where: str) -> tuple[int, int] | None:
    rows, cols = plate_map.get("grid_rows"), plate_map.get("grid_cols")
    if rows is None or cols is None:
        return None
    try:
        return int(rows), int(cols)
    except ValueError as exc:
        raise PlateError(
            f"{where}: map annotation {PLATE_NS} has grid_rows={rows!r}, grid_cols={cols!r}; "
            "both must be integers"
        ) from exc


def _float(plate_map: dict[str, str], key: str, where: str) -> float | None:
    raw = plate_map.get(key)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise PlateError(
            f"{where}: map annotation {PLATE_NS} has {key}={raw!r}, not a number"
        ) from exc
