"""Synthetic Opera Phenix / Operetta CLS plates exactly as Harmony exports them (V5 and V7).

``<out>/Images/`` holds LZW-compressed ``r01c01f01p01-ch1sk1fk1fl1.tiff`` files and the index:
``Index.idx.xml`` (namespace ``.../PEHH/HarmonyV5``: every ``<Image>`` repeats its channel's
ChannelName, ImageResolutionX/Y, wavelengths and objective) or ``Index.xml`` (``HarmonyV7``: the
``<Image>`` keeps only its coordinates, position and time; the channel settings, pixel size
included, live only in ``<Maps><Map><Entry ChannelID>``). As the instruments do: fields are
numbered centre first then in a snake; PositionX/Y are metres from the well centre with Y
upwards; PositionZ is metres; TimepointID counts from 0 while the file name's ``sk`` counts from
1; AbsTime is an ISO timestamp with offset; PlateID is the barcode.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from prefect_hcs.formats.fsio import resolve
from prefect_hcs.formats.wells import split_well
from prefect_hcs.testing.synthetic import phenix_field_order, plate_dims
from prefect_hcs.testing.synthetic_tiles import Tile, TileSpec, centre_offset_um, write_well_tiles

CHANNELS = (  # name, excitation nm, emission nm
    ("HOECHST 33342", 375, 456),
    ("Alexa 488", 488, 525),
    ("Alexa 568", 561, 599),
    ("Alexa 647", 640, 706),
)
START = datetime(2024, 3, 5, 21, 14, 7, tzinfo=timezone(timedelta(hours=1)))
_NS = "http://www.perkinelmer.com/PEHH/Harmony{}"
_CHANNEL_TAGS = ("ChannelName", "ImageResolutionX", "ImageResolutionY", "MainExcitationWavelength",
                 "MainEmissionWavelength", "ObjectiveMagnification", "ObjectiveNA")  # fmt: skip


class _Index:
    """A Harmony index being built, V5 (per-image channel settings) or V7 (only in <Maps>)."""

    def __init__(self, version: str, instrument: str, barcode: str, wells: list[str]):
        self.ns = _NS.format(version.upper())
        self.v7 = version.lower() == "v7"
        ET.register_namespace("", self.ns)
        self.root = ET.Element(self._tag("EvaluationInputData"), {"Version": "1"})
        self.sub(self.root, "User", "Synthetic")
        self.sub(self.root, "InstrumentType", instrument)
        plate = self.sub(self.sub(self.root, "Plates"), "Plate")
        n_rows, n_cols, n_wells = plate_dims(wells)
        for tag, value in (("PlateID", barcode), ("MeasurementID", "1f2e3d4c-0000-4000-8000-1"),
                           ("MeasurementStartTime", START.isoformat(timespec="milliseconds")),
                           ("Name", barcode), ("PlateTypeName", f"{n_wells}PerkinElmer CellCarrier"),
                           ("PlateRows", n_rows), ("PlateColumns", n_cols)):  # fmt: skip
            self.sub(plate, tag, value)
        for well in wells:
            self.sub(plate, "Well", id=_well_code(well))
        self.wells = self.sub(self.root, "Wells")
        self.maps = self.sub(self.sub(self.root, "Maps"), "Map")
        self.images = self.sub(self.root, "Images")
        self.well_el: dict[str, ET.Element] = {}

    def _tag(self, name: str) -> str:
        return f"{{{self.ns}}}{name}"

    def sub(self, parent: ET.Element, tag: str, text: Any = None, **attrib: str) -> ET.Element:
        el = ET.SubElement(parent, self._tag(tag), attrib)
        if text is not None:
            el.text = str(text)
        return el

    def channel(self, ch: int, settings: list[tuple[str, Any, str | None]]) -> None:
        entry = self.sub(self.maps, "Entry", ChannelID=str(ch))
        for tag, value, unit in settings:
            self.sub(entry, tag, value, **({"Unit": unit} if unit is not None else {}))

    def image(self, well: str, fields: list[tuple[str, Any, str | None]], ident: str) -> None:
        if well not in self.well_el:
            row, col = split_well(well)
            self.well_el[well] = el = self.sub(self.wells, "Well")
            for tag, value in (("id", _well_code(well)), ("Row", row + 1), ("Col", col + 1)):
                self.sub(el, tag, value)
        self.sub(self.well_el[well], "Image", id=ident)
        image = self.sub(self.images, "Image", Version="1")
        for tag, value, unit in fields:
            self.sub(image, tag, value, **({"Unit": unit} if unit is not None else {}))

    def to_bytes(self) -> bytes:
        ET.indent(self.root, space="  ")
        # Harmony writes UTF-8 with a byte-order mark.
        body = ET.tostring(self.root, encoding="unicode")
        return ('\ufeff<?xml version="1.0" encoding="utf-8"?>\r\n' + body + "\r\n").encode()


def _well_code(well: str) -> str:
    row, col = split_well(well)
    return f"{row + 1:02d}{col + 1:02d}"


def _channel_settings(ch: int, pixel_m: float, magnification: int, na: float) -> list:
    name, ex, em = CHANNELS[(ch - 1) % len(CHANNELS)]
    return [("ChannelName", name, None), ("ImageResolutionX", f"{pixel_m:.6E}", "m"),
            ("ImageResolutionY", f"{pixel_m:.6E}", "m"), ("MainExcitationWavelength", ex, "nm"),
            ("MainEmissionWavelength", em, "nm"), ("ObjectiveMagnification", magnification, ""),
            ("ObjectiveNA", na, "")]  # fmt: skip


def make_harmony_plate(
    out_dir: str,
    *,
    wells: list[str],
    sites: int = 4,
    channels: int = 2,
    z: int = 3,
    timepoints: int = 1,
    size: int = 256,
    overlap: float = 0.1,
    seed: int = 0,
    variant: Literal["v5", "v7"] = "v5",
    instrument: str = "Phenix",
    z_step_um: float = 2.0,
    time_interval_s: float = 600.0,
    barcode: str = "PE-000123",
    nuclei_per_well: int | None = None,
) -> dict[str, Any]:
    """Write a Harmony export of a synthetic plate to `out_dir` (any fsspec URL); its ground truth.

    `variant` picks the index format (``v5``: ``Index.idx.xml``; ``v7``: ``Index.xml``) and
    `instrument` the ``<InstrumentType>`` (``Phenix`` or ``Operetta CLS``).
    """
    if variant not in ("v5", "v7"):
        raise ValueError(f"variant must be 'v5' or 'v7', got {variant!r}")
    spec = TileSpec(sites, channels, z, timepoints, size, overlap, seed, nuclei_per_well)
    spec.validate()
    wells = sorted(dict.fromkeys(wells), key=split_well)
    fs, root = resolve(out_dir)
    fs.makedirs(f"{root}/Images", exist_ok=True)
    index = _Index(variant, instrument, barcode, wells)
    magnification, na = (20, 1.0) if instrument == "Phenix" else (40, 1.1)
    for ch in range(1, channels + 1):
        index.channel(ch, _channel_settings(ch, spec.pixel_um * 1e-6, magnification, na))
    rows, cols = spec.grid
    field_of_site = {
        r * cols + c + 1: f for f, (r, c) in enumerate(phenix_field_order(rows, cols), 1)
    }

    def place(well: str, field: int, tile: Tile) -> str:
        row, col = split_well(well)
        name = (
            f"r{row + 1:02d}c{col + 1:02d}f{field:02d}p{tile.z:02d}-ch{tile.channel}"
            f"sk{tile.timepoint}fk1fl1.tiff"
        )
        ident = f"{_well_code(well)}K{tile.timepoint}F{field}P{tile.z}R{tile.channel}"
        fields = _image_fields(spec, index.v7, well, field, tile, name, ident,
                               (magnification, na), z_step_um, time_interval_s)  # fmt: skip
        index.image(well, fields, ident)
        return f"{root}/Images/{name}"

    truth_wells = write_well_tiles(
        fs, spec, wells, field_of_site, place, field_key="phenix_field_of_site"
    )
    index_name = "Index.xml" if variant == "v7" else "Index.idx.xml"
    with fs.open(f"{root}/Images/{index_name}", "wb") as fh:
        fh.write(index.to_bytes())
    return _truth(fs, root, spec, truth_wells, variant, instrument, barcode, z_step_um,
                  time_interval_s)  # fmt: skip


def _image_fields(spec, v7, well, field, tile, name, ident, objective, z_step_um, interval_s):
    row, col = split_well(well)
    x_um, y_um = centre_offset_um(spec, tile.nominal)
    z_m = (tile.z - (spec.z + 1) // 2) * z_step_um * 1e-6
    when = START + timedelta(
        seconds=(tile.timepoint - 1) * interval_s + field * 1.5 + tile.z * 0.2 + tile.channel * 0.05
    )
    fields = [("id", ident, None), ("State", "Ok", None), ("URL", name, None),
              ("Row", row + 1, None), ("Col", col + 1, None), ("FieldID", field, None),
              ("PlaneID", tile.z, None), ("TimepointID", tile.timepoint - 1, None),
              ("FlimID", 1, None), ("ChannelID", tile.channel, None)]  # fmt: skip
    if not v7:
        fields += _channel_settings(tile.channel, spec.pixel_um * 1e-6, *objective)[:5]
    fields += [("ImageSizeX", spec.size, None), ("ImageSizeY", spec.size, None),
               ("PositionX", f"{x_um * 1e-6:.9E}", "m"), ("PositionY", f"{y_um * 1e-6:.9E}", "m"),
               ("PositionZ", f"{z_m:.6E}", "m"), ("AbsPositionZ", f"{0.0131 + z_m:.6E}", "m"),
               ("MeasurementTimeOffset", (tile.timepoint - 1) * interval_s, "s"),
               ("AbsTime", when.isoformat(timespec="milliseconds"), None)]  # fmt: skip
    if not v7:
        fields += _channel_settings(tile.channel, spec.pixel_um * 1e-6, *objective)[5:]
    return fields


def _truth(fs, root, spec, wells, variant, instrument, barcode, z_step_um, interval_s) -> dict:
    rows, cols = spec.grid
    truth = {
        "format": "phenix", "variant": variant, "instrument": instrument, "barcode": barcode,
        "wells": wells, "grid": [rows, cols], "overlap": spec.overlap, "step_px": spec.step,
        "tile_size": spec.size, "channels": spec.channels, "z": spec.z,
        "focus_plane": (spec.z + 1) // 2, "timepoints": spec.timepoints, "sites": spec.sites,
        "seed": spec.seed, "pixel_size_um": spec.pixel_um, "z_step_um": z_step_um,
        "time_interval_s": interval_s,
        "channel_names": {str(c): CHANNELS[(c - 1) % len(CHANNELS)][0]
                          for c in range(1, spec.channels + 1)},
    }  # fmt: skip
    with fs.open(f"{root}/ground_truth.json", "wb") as fh:
        fh.write(json.dumps(truth, indent=1).encode())
    return truth
