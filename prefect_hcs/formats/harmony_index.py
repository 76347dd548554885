"""Parse a Harmony index (``Index.idx.xml`` of Harmony V5/V6, ``Index.xml`` of Harmony V7).

Both are ``<EvaluationInputData xmlns=".../PEHH/HarmonyV{5,6,7}">`` documents with
``<Plates><Plate>`` (PlateID, PlateRows, PlateColumns), ``<Maps><Map><Entry ChannelID="n">``
(per-channel settings) and ``<Images><Image>`` (one per plane: URL, Row, Col, FieldID, PlaneID,
ChannelID, TimepointID, PositionX/Y/Z, AbsTime). V5/V6 repeat the channel settings
(ChannelName, ImageResolutionX/Y, MainExcitation/EmissionWavelength, ObjectiveMagnification/NA)
in every ``<Image>``; V7 keeps them only in the ``<Maps>`` entries. This module reads both, an
``<Image>`` value winning over its channel's entry. Lengths carry ``Unit="m"`` (converted to µm).

Pure parsing: no filesystem access, no layout decisions (see `phenix.open_phenix`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect_hcs.formats.layout import ChannelInfo, PlateError

_REQUIRED = ("URL", "Row", "Col", "FieldID", "PlaneID", "ChannelID")
_INTS = (
    ("row", "Row"),
    ("col", "Col"),
    ("field", "FieldID"),
    ("plane", "PlaneID"),
    ("channel", "ChannelID"),
    ("timepoint", "TimepointID"),
)
_TO_UM = {"m": 1e6, "mm": 1e3, "um": 1.0, "µm": 1.0, "nm": 1e-3}
_CHANNEL_KEYS = (
    "ChannelName",
    "ImageResolutionX",
    "ImageResolutionY",
    "MainExcitationWavelength",
    "MainEmissionWavelength",
    "ObjectiveMagnification",
    "ObjectiveNA",
)
_VERSION_RE = re.compile(r"Harmony(V\d+)", re.IGNORECASE)


@dataclass
class HarmonyIndex:
    """What a Harmony index says, in plain values (lengths in µm, times as datetimes)."""

    version: str | None
    instrument: str | None
    plate_id: str | None
    plate_rows: int | None
    plate_columns: int | None
    records: list[dict[str, Any]]
    channels: dict[int, ChannelInfo]
    pixel_um: dict[int, tuple[float | None, float | None]] = field(default_factory=dict)
    objective: str | None = None


def _local(tag: str) -> str:
    """Tag name without its XML namespace (Harmony V5, V6, ... all look the same to us)."""
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def length_um(element: ET.Element | None, where: str, what: str) -> float | None:
    """A length element (``Unit="m"`` by default, as Harmony writes) in micrometres."""
    if element is None or not _text(element):
        return None
    unit = element.get("Unit", "m").strip()
    try:
        return float(_text(element)) * _TO_UM[unit]
    except (ValueError, KeyError):
        raise PlateError(
            f"malformed Harmony index {where}: {what} <{_local(element.tag)}> is "
            f"{element.text!r} with Unit={unit!r} (expected a number in m, mm, um or nm)"
        ) from None


def _number(element: ET.Element | None) -> float | None:
    try:
        return float(_text(element)) if _text(element) else None
    except ValueError:
        return None


def _time(element: ET.Element | None) -> datetime | None:
    try:
        return datetime.fromisoformat(_text(element)) if _text(element) else None
    except ValueError:
        return None


def _root(data: bytes, where: str) -> ET.Element:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, column = exc.position
        raise PlateError(
            f"malformed Harmony index {where}: XML error at line {line}, column {column} "
            f"({str(exc).split(':')[0]})"
        ) from None
    if _local(root.tag) != "EvaluationInputData":
        raise PlateError(
            f"not a Harmony index: {where} has root element <{_local(root.tag)}>, "
            "expected <EvaluationInputData>"
        )
    return root


def _plate_int(plate: ET.Element | None, name: str, where: str) -> int | None:
    text = _text(_child(plate, name)) if plate is not None else ""
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise PlateError(
            f"malformed Harmony index {where}: <Plate><{name}> is {text!r}, expected a count >= 1"
        )
    return int(text)


def _channel_entries(root: ET.Element) -> dict[int, dict[str, ET.Element]]:
    """{ChannelID: {tag: element}} merged over every ``<Maps><Map><Entry ChannelID>``."""
    entries: dict[int, dict[str, ET.Element]] = {}
    for entry in root.iter():
        if _local(entry.tag) == "Entry" and (cid := entry.get("ChannelID", "")).isdigit():
            merged = entries.setdefault(int(cid), {})
            for child in entry:
                if _local(child.tag) in _CHANNEL_KEYS and _text(child):
                    merged.setdefault(_local(child.tag), child)
    return entries


def parse_harmony_index(data: bytes, where: str) -> HarmonyIndex:
    """Everything the pipeline uses from a Harmony index, with one clear error per problem."""
    root = _root(data, where)
    ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    version = (m := _VERSION_RE.search(ns)) and m.group(1).upper()
    plates = _child(root, "Plates")
    plate = _child(plates, "Plate") if plates is not None else None
    images_el = _child(root, "Images")
    if images_el is None:
        raise PlateError(f"malformed Harmony index {where}: no <Images> element")
    entries = _channel_entries(root)
    records = [
        _image_record(image, n, where, entries)
        for n, image in enumerate((c for c in images_el if _local(c.tag) == "Image"), 1)
    ]
    if not records:
        raise PlateError(f"malformed Harmony index {where}: <Images> lists no <Image>")
    index = HarmonyIndex(
        version=version,
        instrument=_text(_child(root, "InstrumentType")) or None,
        plate_id=_text(_child(plate, "PlateID")) or None if plate is not None else None,
        plate_rows=_plate_int(plate, "PlateRows", where),
        plate_columns=_plate_int(plate, "PlateColumns", where),
        records=records,
        channels={},
    )
    _channel_info(index, entries, where)
    return index


def _image_record(
    image: ET.Element, n: int, where: str, entries: dict[int, dict[str, ET.Element]]
) -> dict[str, Any]:
    fields = {_local(c.tag): c for c in image}
    ident = _text(fields.get("id")) or f"#{n}"
    label = f"<Image> {ident} (entry {n} of <Images>)"
    missing = [k for k in _REQUIRED if not _text(fields.get(k))]
    if missing:
        raise PlateError(
            f"malformed Harmony index {where}: {label} lacks {', '.join(f'<{k}>' for k in missing)}"
        )
    record: dict[str, Any] = {"url": _text(fields["URL"]), "label": label, "id": ident}
    for key, name in _INTS:
        text = _text(fields.get(name)) or "1"
        try:
            record[key] = int(text)
        except ValueError:
            raise PlateError(
                f"malformed Harmony index {where}: {label} has <{name}>{text}</{name}>, "
                "expected an integer"
            ) from None
    record["x"] = length_um(fields.get("PositionX"), where, label)
    record["y"] = length_um(fields.get("PositionY"), where, label)
    record["z"] = length_um(fields.get("PositionZ"), where, label)
    record["time"] = _time(fields.get("AbsTime"))
    # V5/V6 carry channel settings per image; keep them so the channel table can use them.
    channel = entries.setdefault(record["channel"], {})
    for key in _CHANNEL_KEYS:
        if key in fields and _text(fields[key]):
            channel.setdefault(key, fields[key])
    return record


def _channel_info(
    index: HarmonyIndex, entries: dict[int, dict[str, ET.Element]], where: str
) -> None:
    """Fill names, wavelengths, pixel sizes and the objective from the merged channel entries."""
    used = sorted({r["channel"] for r in index.records})
    objectives = []
    for ch in used:
        entry = entries.get(ch, {})
        label = f'<Maps><Entry ChannelID="{ch}">'
        index.channels[ch] = ChannelInfo(
            name=_text(entry.get("ChannelName")) or f"Channel {ch}",
            excitation_nm=_number(entry.get("MainExcitationWavelength")),
            emission_nm=_number(entry.get("MainEmissionWavelength")),
        )
        index.pixel_um[ch] = (
            length_um(entry.get("ImageResolutionX"), where, label),
            length_um(entry.get("ImageResolutionY"), where, label),
        )
        mag = _number(entry.get("ObjectiveMagnification"))
        na = _number(entry.get("ObjectiveNA"))
        if mag:
            objectives.append(f"{mag:g}x" + (f" / {na:g} NA" if na else ""))
    index.objective = objectives[0] if objectives else None
