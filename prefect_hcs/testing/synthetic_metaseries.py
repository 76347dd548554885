"""What one MetaXpress image file looks like: its MetaSeries description, TIFF, name and folder.

Shared by the synthetic ImageXpress generators (`synthetic_imagexpress`, and `synthetic`'s
``make_plate``): the ``<MetaData><PlaneInfo>`` ImageDescription MetaXpress writes
(`metaseries_description`, with the props of one plane from `plane_props`), the LZW TIFF signed
``MetaSeries`` (`metaseries_tiff`), the ``<plate>_<well>_s<site>_w<c><GUID>.tif`` file name
(`file_name`) and the folder of a plane in an acquisition folder or an export (`plane_folder`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import tifffile

__all__ = [
    "OBJECTIVE",
    "PlaneFacts",
    "Variant",
    "calibration_props",
    "file_name",
    "metaseries_description",
    "metaseries_tiff",
    "plane_folder",
    "plane_props",
]

#: The two layouts: the instrument's acquisition folder, or a MetaXpress export.
Variant = Literal["acquisition", "export"]
#: The objective every synthetic plane names (``_MagSetting_``, ``_MagNA_``).
OBJECTIVE = ("20X Plan Apo Lambda", 0.75)


def metaseries_description(props: dict[str, tuple[str, Any]]) -> str:
    """A MetaSeries ImageDescription: ``<MetaData>`` with the plane's ``<prop>`` entries."""
    head = [
        ("Description", "string", ""),
        ("MetaDataVersion", "float", "1"),
        ("ApplicationName", "string", "MetaXpress"),
        ("ApplicationVersion", "string", "6.7.2.290"),
    ]

    def fmt(items: list[tuple[str, str, Any]]) -> str:
        return "".join(f'<prop id="{k}" type="{t}" value="{v}"/>\r\n' for k, t, v in items)

    plane = [(k, t, v) for k, (t, v) in props.items()]
    return f"<MetaData>\r\n{fmt(head)}<PlaneInfo>\r\n{fmt(plane)}</PlaneInfo>\r\n</MetaData>"


def metaseries_tiff(array: np.ndarray, description: str | None) -> bytes:
    """An LZW TIFF of ``array``; with a description, signed ``MetaSeries`` as MetaXpress does."""
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        array,
        description=description,
        software="MetaSeries" if description else False,
        compression="lzw",
        metadata=None,
    )
    return buf.getvalue()


@dataclass
class PlaneFacts:
    """What one written image says about itself."""

    well: str
    site: int
    channel: int
    z: int  # 0 = projection
    t: int
    stage: tuple[float, float]
    z_um: float
    time: datetime


def calibration_props(size: int, pixel_um: float) -> dict[str, tuple[str, Any]]:
    """The first MetaSeries ``<prop>`` entries of every plane: type, size, bit depth, calibration."""
    return {
        "plane-type": ("string", "plane"),
        "pixel-size-x": ("int", size),
        "pixel-size-y": ("int", size),
        "bits-per-pixel": ("int", 16),
        "spatial-calibration-state": ("bool", "on"),
        "spatial-calibration-x": ("float", f"{pixel_um:.6g}"),
        "spatial-calibration-y": ("float", f"{pixel_um:.6g}"),
        "spatial-calibration-units": ("string", "um"),
    }


def plane_props(
    p: PlaneFacts, illumination: str, wavelength_nm: int, size: int, pixel_um: float
) -> dict[str, tuple[str, Any]]:
    """The MetaSeries ``<prop>`` entries MetaXpress writes for one plane, by id: (type, value)."""
    props: dict[str, tuple[str, Any]] = {
        **calibration_props(size, pixel_um),
        "stage-position-x": ("float", f"{p.stage[0]:.2f}"),
        "stage-position-y": ("float", f"{p.stage[1]:.2f}"),
        "z-position": ("float", f"{p.z_um:.3f}"),
        "ImageXpress Micro X": ("float", f"{p.stage[0]:.2f}"),
        "ImageXpress Micro Y": ("float", f"{p.stage[1]:.2f}"),
        "ImageXpress Micro Z": ("float", f"{p.z_um:.3f}"),
        "acquisition-time-local": ("time", p.time.strftime("%Y%m%d %H:%M:%S.%f")[:-3]),
        "image-name": ("string", illumination),
        "stage-label": ("string", f"{p.well} : Site_{p.site}"),
        "_IllumSetting_": ("string", illumination),
        "wavelength": ("int", wavelength_nm),
        "_MagSetting_": ("string", OBJECTIVE[0]),
        "_MagNA_": ("float", OBJECTIVE[1]),
        "Exposure Time": ("string", "15 ms"),
    }
    if p.z == 0:
        props["Z Projection Method"] = ("string", "Maximum")
    return props


def file_name(
    plate: str, well: str, site: int | None, ch: int | None, guid: str, thumb: bool
) -> str:
    """``<plate>_<well>[_s<site>][_w<ch>][_thumb]<GUID>.tif`` (no site/channel part when None)."""
    parts = [plate, well] + ([f"s{site}"] if site else []) + ([f"w{ch}"] if ch else [])
    return "_".join(parts) + ("_thumb" if thumb else "") + guid + ".tif"


def plane_folder(variant: Variant, plate_dir: str, t: int, z: int, n_z: int, n_t: int) -> str:
    """Folder of a plane (z = 0: projection) in the chosen layout."""
    if variant == "export":
        base = f"{plate_dir}/TimePoint_{t}"
        return base if n_z == 1 else f"{base}/ZStep_{z}"
    base = plate_dir if n_t == 1 else f"{plate_dir}/TimePoint_{t}"
    return base if (z == 0 or n_z == 1) else f"{base}/ZStep_{z}"
