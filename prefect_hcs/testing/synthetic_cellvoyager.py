"""Synthetic Yokogawa CellVoyager (CV7000/CV8000) measurement folders, as the instrument writes them.

One folder: ``MeasurementData.mlf`` (one ``bts:MeasurementRecord bts:Type="IMG"`` per image, plus
an autofocus ``ERR`` record as real runs have), ``MeasurementDetail.mrf`` (plate geometry,
``TargetSystem``, per-channel pixel size), the ``.mes`` protocol (channel targets, lasers,
objective), the ``.wpi`` plate and ``.wpp`` product files, and the images named
``<title>_<well>_T0001F001L01A01Z01C01.tif``. Stage X/Y/Z are µm (X to the right, Y upwards,
from the well centre); fields are acquired in a snake, so the reader must reorder them.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

from prefect_hcs.formats.fsio import resolve
from prefect_hcs.formats.wells import split_well
from prefect_hcs.testing.synthetic import plate_dims
from prefect_hcs.testing.synthetic_tiles import Tile, TileSpec, centre_offset_um, write_well_tiles

BTS = "http://www.yokogawa.co.jp/BTS/BTSSchema/1.0"
CHANNELS = (  # target, laser nm, band-pass
    ("DAPI", 405, "BP445/45"),
    ("GFP", 488, "BP525/50"),
    ("mCherry", 561, "BP600/37"),
    ("Cy5", 640, "BP676/29"),
)
START = datetime(2023, 11, 14, 18, 2, 11, 250000, tzinfo=timezone(timedelta(hours=1)))
_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'


def _attrs(**values: Any) -> str:
    return " ".join(f"bts:{k}={quoteattr(str(v))}" for k, v in values.items())


def snake_fields(rows: int, cols: int) -> dict[int, int]:
    """{raster site: field index} of a snake acquisition (left to right, then back)."""
    order = []
    for r in range(rows):
        columns = range(cols) if r % 2 == 0 else range(cols - 1, -1, -1)
        order += [r * cols + c + 1 for c in columns]
    return {site: field for field, site in enumerate(order, 1)}


def _record(well: str, field: int, tile, name: str, spec: TileSpec, z_step: float, dt: float):
    row, col = split_well(well)
    x, y = centre_offset_um(spec, tile.nominal)
    when = START + timedelta(seconds=(tile.timepoint - 1) * dt + field * 2.1 + tile.z * 0.3)
    attrs = _attrs(Type="IMG", Time=when.isoformat(timespec="milliseconds"), Column=col + 1,
                   Row=row + 1, TimePoint=tile.timepoint, FieldIndex=field, ZIndex=tile.z,
                   TimelineIndex=1, ActionIndex=1, Action="3D", X=f"{x:.1f}", Y=f"{y:.1f}",
                   Z=f"{(tile.z - 1) * z_step - 2.0:.1f}", Ch=tile.channel)  # fmt: skip
    return f"<bts:MeasurementRecord {attrs}>{escape(name)}</bts:MeasurementRecord>\n"


def _measurement_channel(c: int, spec: TileSpec) -> str:
    return _attrs(Ch=c, HorizontalPixelDimension=spec.pixel_um,
                  VerticalPixelDimension=spec.pixel_um, CameraNumber=1, InputBitDepth=16,
                  InputLevel=1000, HorizontalPixels=spec.size, VerticalPixels=spec.size)  # fmt: skip


def _laser_name(c: int) -> str:
    return f"Ch{c}_{CHANNELS[(c - 1) % 4][1]}nm/100mW"


def _laser(c: int) -> str:
    return _attrs(Name=_laser_name(c), Type="Laser", WaveLength=CHANNELS[(c - 1) % 4][1], Power=100)


def _mes_channel(c: int) -> str:
    target, _, band = CHANNELS[(c - 1) % 4]
    attrs = _attrs(Ch=c, Target=target, Objective="UPLSAPO20X", Magnification=20,
                   Acquisition=band, ExposureTime=100, Binning=1)  # fmt: skip
    return (f"    <bts:Channel {attrs}>\n      <bts:LightSourceName>{escape(_laser_name(c))}"
            "</bts:LightSourceName>\n    </bts:Channel>\n")  # fmt: skip


def _mrf(title: str, system: str, wells: list[str], spec: TileSpec, mes: str, wpi: str) -> str:
    n_rows, n_cols, _ = plate_dims(wells)
    root = _attrs(Version="1.0", OperatorName="synthetic", Title=title, Application="",
                  BeginTime=START.isoformat(), EndTime=START.isoformat(),
                  MeasurementSettingFileName=mes, ColumnCount=n_cols, RowCount=n_rows,
                  TimePointCount=spec.timepoints, FieldCount=spec.sites, ZCount=spec.z,
                  TargetSystem=system, ReleaseNumber="R1.17.05")  # fmt: skip
    plate = _attrs(Name=title, WellPlateFileName=wpi, WellPlateProductFileName="10_Greiner.wpp")
    channels = "".join(
        f"  <bts:MeasurementChannel {_measurement_channel(c, spec)} />\n"
        for c in range(1, spec.channels + 1)
    )
    return (f'{_HEAD}<bts:MeasurementDetail {root} xmlns:bts="{BTS}">\n'
            f"  <bts:MeasurementSamplePlate {plate} />\n{channels}</bts:MeasurementDetail>\n")  # fmt: skip


def _mes(wells: list[str], spec: TileSpec) -> str:
    n_rows, n_cols, _ = plate_dims(wells)
    used = range(1, spec.channels + 1)
    lasers = "".join(f"    <bts:LightSource {_laser(c)} />\n" for c in used)
    channels = "".join(_mes_channel(c) for c in used)
    root = _attrs(Version="1.0", ProductID="10", Application="", Columns=n_cols, Rows=n_rows)
    return (f'{_HEAD}<bts:MeasurementSetting {root} xmlns:bts="{BTS}">\n'
            f"  <bts:LightSourceList>\n{lasers}  </bts:LightSourceList>\n"
            f"  <bts:ChannelList>\n{channels}  </bts:ChannelList>\n</bts:MeasurementSetting>\n")  # fmt: skip


def _wpi(title: str, wells: list[str]) -> str:
    n_rows, n_cols, _ = plate_dims(wells)
    attrs = _attrs(Version="1.0", Name=title, ProductID="10", Usage="SamplePlate",
                   Columns=n_cols, Rows=n_rows)  # fmt: skip
    return (f'{_HEAD}<bts:WellPlate {attrs} xmlns:bts="{BTS}">\n'
            "  <bts:Description></bts:Description>\n</bts:WellPlate>")  # fmt: skip


def _wpp(wells: list[str]) -> str:
    n_rows, n_cols, _ = plate_dims(wells)
    attrs = _attrs(Version="1.0", Name="Greiner #655090", ProductID="10", Manufacturer="Greiner",
                   Columns=n_cols, Rows=n_rows, ColumnPitch=9, RowPitch=9)  # fmt: skip
    return f'{_HEAD}<bts:WellPlateProduct {attrs} xmlns:bts="{BTS}" />'


def make_cellvoyager_plate(
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
    system: Literal["CV8000", "CV7000"] = "CV8000",
    title: str = "CV-Plate-0042",
    z_step_um: float = 3.0,
    time_interval_s: float = 900.0,
    nuclei_per_well: int | None = None,
) -> dict[str, Any]:
    """Write a CellVoyager measurement folder of a synthetic plate; return its ground truth."""
    spec = TileSpec(sites, channels, z, timepoints, size, overlap, seed, nuclei_per_well)
    spec.validate()
    wells = sorted(dict.fromkeys(wells), key=split_well)
    fs, root = resolve(out_dir)
    fs.makedirs(root, exist_ok=True)
    field_of_site = snake_fields(*spec.grid)
    records: list[str] = []

    def place(well: str, field: int, tile: Tile) -> str:
        name = (f"{title}_{well}_T{tile.timepoint:04d}F{field:03d}L01A01"
                f"Z{tile.z:02d}C{tile.channel:02d}.tif")  # fmt: skip
        records.append(_record(well, field, tile, name, spec, z_step_um, time_interval_s))
        return f"{root}/{name}"

    truth_wells = write_well_tiles(
        fs, spec, wells, field_of_site, place, field_key="field_of_site", compression=None
    )
    error = _attrs(Type="ERR", Time=START.isoformat(timespec="milliseconds"), Column=1, Row=1,
                   TimePoint=1, PartialTileIndex=1, TimelineIndex=1, X="0.0", Y="0.0")  # fmt: skip
    records.append(
        f"<bts:MeasurementRecord {error}>AF Error at A01 No. 0</bts:MeasurementRecord>\n"
    )
    files = {
        "MeasurementData.mlf": f'{_HEAD}<bts:MeasurementData bts:Version="1.0" xmlns:bts="{BTS}">\n'
        + "".join(records) + "</bts:MeasurementData>\n",
        "MeasurementDetail.mrf": _mrf(title, system, wells, spec, f"{title}.mes", f"{title}.wpi"),
        f"{title}.mes": _mes(wells, spec),
        f"{title}.wpi": _wpi(title, wells),
        "10_Greiner.wpp": _wpp(wells),
    }  # fmt: skip
    for name, text in files.items():
        with fs.open(f"{root}/{name}", "wb") as fh:
            fh.write(text.encode())
    truth = {
        "format": "cellvoyager", "system": system, "title": title, "wells": truth_wells,
        "grid": list(spec.grid), "overlap": overlap, "step_px": spec.step, "tile_size": size,
        "channels": channels, "z": z, "timepoints": timepoints, "sites": sites, "seed": seed,
        "pixel_size_um": spec.pixel_um, "z_step_um": z_step_um, "time_interval_s": time_interval_s,
        "channel_names": {str(c): CHANNELS[(c - 1) % 4][0] for c in range(1, channels + 1)},
    }  # fmt: skip
    with fs.open(f"{root}/ground_truth.json", "wb") as fh:
        fh.write(json.dumps(truth, indent=1).encode())
    return truth
