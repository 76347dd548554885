"""Parse Yokogawa CellVoyager (CV7000/CV8000) measurement files: ``.mlf``, ``.mrf``, ``.mes``, ``.wpi``.

All are XML in the ``http://www.yokogawa.co.jp/BTS/BTSSchema/1.0`` namespace with ``bts:``
attributes:

- ``MeasurementData.mlf``: one ``<bts:MeasurementRecord>`` per image, ``bts:Type="IMG"`` (or
  ``"ERR"`` for an autofocus error and the like), with 1-based ``Row``/``Column``, ``TimePoint``,
  ``FieldIndex``, ``ZIndex``, ``Ch``, ``ActionIndex``, stage ``X``/``Y``/``Z`` in µm, ``Time``, and
  the file name (relative to the folder) as text. A projection the instrument computed carries
  ``bts:ZImageProcessing`` (e.g. ``"Maximum"``).
- ``MeasurementDetail.mrf``: ``RowCount``/``ColumnCount``, ``TargetSystem`` (``"CV8000"``,
  ``"CV7000 FD"``), ``MeasurementSettingFileName`` (the ``.mes``), the sample plate
  (``WellPlateFileName`` = the ``.wpi``), and per channel ``<bts:MeasurementChannel>`` with
  ``HorizontalPixelDimension``/``VerticalPixelDimension`` (µm per pixel).
- the ``.mes`` protocol (optional): ``<bts:ChannelList><bts:Channel bts:Ch bts:Target
  bts:Objective bts:Magnification bts:Acquisition>`` and light sources with ``WaveLength``.
- the ``.wpi`` plate (optional): ``bts:Name``, ``bts:Rows``, ``bts:Columns``.

Pure parsing of bytes; the handler (`cellvoyager`) reads the files and builds the layout.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect_hcs.formats.layout import ChannelInfo, PlateError

BTS = "http://www.yokogawa.co.jp/BTS/BTSSchema/1.0"
_INTS = (
    ("row", "Row"),
    ("col", "Column"),
    ("timepoint", "TimePoint"),
    ("field", "FieldIndex"),
    ("z", "ZIndex"),
    ("channel", "Ch"),
)
_BANDPASS = re.compile(r"BP\s*(\d+(?:\.\d+)?)")


@dataclass
class MeasurementDetail:
    """What the ``.mrf`` (and optional ``.mes``/``.wpi``) say about the whole measurement."""

    target_system: str | None = None
    title: str | None = None
    rows: int | None = None
    columns: int | None = None
    mes_name: str | None = None
    wpi_name: str | None = None
    plate_name: str | None = None
    pixel_um: dict[int, tuple[float | None, float | None]] = field(default_factory=dict)
    channels: dict[int, ChannelInfo] = field(default_factory=dict)
    objective: str | None = None


def _attr(element: ET.Element, name: str) -> str:
    return (element.get(f"{{{BTS}}}{name}") or "").strip()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _float(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _count(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


def parse_xml(data: bytes, where: str, root_name: str) -> ET.Element:
    """The root element; PlateError naming the file, line and expected root otherwise."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, column = exc.position
        raise PlateError(
            f"malformed CellVoyager file {where}: XML error at line {line}, column {column} "
            f"({str(exc).split(':')[0]})"
        ) from None
    if _local(root.tag) != root_name:
        raise PlateError(
            f"not a CellVoyager file: {where} has root element <{_local(root.tag)}>, expected "
            f"<bts:{root_name}>"
        )
    return root


def parse_mlf(data: bytes, where: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(image records, texts of the error records) of a ``MeasurementData.mlf``."""
    root = parse_xml(data, where, "MeasurementData")
    records, errors = [], []
    for n, rec in enumerate((e for e in root if _local(e.tag) == "MeasurementRecord"), 1):
        kind = _attr(rec, "Type")
        if kind != "IMG":
            errors.append(f"{kind or '?'}: {(rec.text or '').strip()}")
            continue
        records.append(_image_record(rec, n, where))
    if not records:
        raise PlateError(f'{where} lists no image (no <bts:MeasurementRecord bts:Type="IMG">)')
    return records, errors


def _image_record(rec: ET.Element, n: int, where: str) -> dict[str, Any]:
    name = (rec.text or "").strip()
    label = f"record {n} ({name or 'no file name'})"
    if not name:
        raise PlateError(f"malformed CellVoyager file {where}: {label} names no image file")
    out: dict[str, Any] = {"name": name, "label": label}
    for key, attr in _INTS:
        text = _attr(rec, attr)
        if not text.lstrip("-").isdigit():
            raise PlateError(
                f"malformed CellVoyager file {where}: {label} has bts:{attr}={text!r}, "
                "expected an integer"
            )
        out[key] = int(text)
    out["action"] = int(_attr(rec, "ActionIndex") or 1)
    out["x"], out["y"], out["z_um"] = (_float(_attr(rec, a)) for a in ("X", "Y", "Z"))
    out["projection"] = _attr(rec, "ZImageProcessing").lower() or None
    try:
        out["time"] = datetime.fromisoformat(_attr(rec, "Time")) if _attr(rec, "Time") else None
    except ValueError:
        out["time"] = None
    return out


def parse_mrf(data: bytes, where: str) -> MeasurementDetail:
    """Plate geometry, instrument, pixel sizes and companion file names of a ``.mrf``."""
    root = parse_xml(data, where, "MeasurementDetail")
    detail = MeasurementDetail(
        target_system=_attr(root, "TargetSystem") or None,
        title=_attr(root, "Title") or None,
        rows=_count(_attr(root, "RowCount")),
        columns=_count(_attr(root, "ColumnCount")),
        mes_name=_attr(root, "MeasurementSettingFileName") or None,
    )
    for child in root:
        if _local(child.tag) == "MeasurementSamplePlate":
            detail.wpi_name = _attr(child, "WellPlateFileName") or None
            detail.plate_name = _attr(child, "Name") or None
        elif _local(child.tag) == "MeasurementChannel" and _attr(child, "Ch").isdigit():
            detail.pixel_um[int(_attr(child, "Ch"))] = (
                _float(_attr(child, "HorizontalPixelDimension")),
                _float(_attr(child, "VerticalPixelDimension")),
            )
    return detail


def apply_mes(detail: MeasurementDetail, data: bytes, where: str) -> None:
    """Channel names (``Target``), wavelengths and the objective from a ``.mes`` protocol."""
    root = parse_xml(data, where, "MeasurementSetting")
    lasers = {
        _attr(e, "Name"): _float(_attr(e, "WaveLength")) for e in root.iter(f"{{{BTS}}}LightSource")
    }
    for channel in root.iter(f"{{{BTS}}}Channel"):
        if not _attr(channel, "Ch").isdigit():
            continue
        sources = [
            lasers.get((s.text or "").strip()) for s in channel.iter(f"{{{BTS}}}LightSourceName")
        ]
        band = _BANDPASS.search(_attr(channel, "Acquisition"))
        detail.channels[int(_attr(channel, "Ch"))] = ChannelInfo(
            name=_attr(channel, "Target") or f"Ch{_attr(channel, 'Ch')}",
            excitation_nm=next((s for s in sources if s), None),
            emission_nm=float(band.group(1)) if band else None,
        )
        if detail.objective is None and _attr(channel, "Objective"):
            mag = _attr(channel, "Magnification")
            detail.objective = _attr(channel, "Objective") + (f" ({mag}x)" if mag else "")


def apply_wpi(detail: MeasurementDetail, data: bytes, where: str) -> None:
    """Plate name and geometry from a ``.wpi`` (the ``.mrf`` counts win when both exist)."""
    root = parse_xml(data, where, "WellPlate")
    detail.plate_name = detail.plate_name or _attr(root, "Name") or None
    detail.rows = detail.rows or _count(_attr(root, "Rows"))
    detail.columns = detail.columns or _count(_attr(root, "Columns"))
