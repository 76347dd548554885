"""What a MetaXpress TIFF says about itself: the MetaSeries XML in its ImageDescription.

MetaXpress writes a ``<MetaData><PlaneInfo><prop id=... type=... value=.../>`` block into every
image; tifffile parses it (`TiffFile.metaseries_metadata`). Only the header is read, never pixels.
Keys used (as written by MetaXpress 6): ``spatial-calibration-x``/``-units`` (pixel size),
``stage-position-x``/``-y`` (stage, µm; ``ImageXpress Micro X/Y`` as fallback), ``z-position``
(``ImageXpress Micro Z`` as fallback), ``acquisition-time-local``, ``_IllumSetting_`` (channel name),
``wavelength`` (nm), ``_MagSetting_``/``_MagNA_`` (objective) and ``Z Projection Method``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fsspec.spec import AbstractFileSystem
from tifffile.tifffile import metaseries_description_metadata

from prefect_hcs.formats.fsio import display
from prefect_hcs.formats.layout import PlateError
from prefect_hcs.formats.tiff import read_tiff_header

_MICRONS = ("um", "µm", "micron", "microns", "micrometer")


@dataclass(frozen=True)
class PlaneMeta:
    """Header facts of one MetaXpress TIFF (None where the file does not say)."""

    shape: tuple[int, int]
    dtype: str
    compression: str
    pixel_size_um: float | None = None
    stage_x_um: float | None = None
    stage_y_um: float | None = None
    z_um: float | None = None
    acquired_at: datetime | None = None
    illumination: str | None = None
    wavelength_nm: float | None = None
    objective: str | None = None
    projection: str | None = None


def _number(info: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = info.get(key)
        if isinstance(value, bool):
            continue
        try:
            return float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            continue
    return None


def _objective(info: dict[str, Any]) -> str | None:
    mag = str(info.get("_MagSetting_") or "").strip()
    na = _number(info, "_MagNA_")
    if not mag:
        return None
    return f"{mag} / {na:g} NA" if na else mag


def _pixel_size(info: dict[str, Any]) -> float | None:
    size = _number(info, "spatial-calibration-x")
    units = str(info.get("spatial-calibration-units") or "um").lower()
    return size if size and size > 0 and units in _MICRONS else None


def _plane_info(description: str, where: str) -> dict[str, Any]:
    """The PlaneInfo dict of a MetaSeries ImageDescription, {} when it is not MetaSeries XML."""
    if not description.startswith("<MetaData>"):
        return {}
    try:
        meta = metaseries_description_metadata(description)
    except Exception as exc:  # ElementTree.ParseError and friends
        raise PlateError(
            f"unreadable MetaSeries XML in {where}: {exc}. Expected a '<MetaData>' "
            "ImageDescription as MetaXpress writes it; export the image again."
        ) from None
    info = meta.get("PlaneInfo", {}) if isinstance(meta, dict) else {}
    return info if isinstance(info, dict) else {}


def read_plane_meta(fs: AbstractFileSystem, path: str) -> PlaneMeta:
    """Shape, dtype, compression and MetaSeries metadata of a TIFF, reading its header only
    (`tiff.read_tiff_header`)."""
    header = read_tiff_header(fs, path)
    info = _plane_info(header.description, display(fs, path))
    when = info.get("acquisition-time-local")
    method = info.get("Z Projection Method")
    return PlaneMeta(
        shape=header.shape,
        dtype=header.dtype,
        compression=header.compression,
        pixel_size_um=_pixel_size(info),
        stage_x_um=_number(info, "stage-position-x", "ImageXpress Micro X"),
        stage_y_um=_number(info, "stage-position-y", "ImageXpress Micro Y"),
        z_um=_number(info, "z-position", "ImageXpress Micro Z"),
        acquired_at=when if isinstance(when, datetime) else None,
        illumination=str(info["_IllumSetting_"]) if info.get("_IllumSetting_") else None,
        wavelength_nm=_number(info, "wavelength"),
        objective=_objective(info),
        projection=str(method).strip().lower() or None if method else None,
    )
