"""Yokogawa CellVoyager CV7000 / CV8000 plates, as the instrument writes them.

Layout: one measurement folder holding ``MeasurementData.mlf`` (one record per image),
``MeasurementDetail.mrf`` (plate geometry, instrument, pixel sizes), optionally the ``.mes``
protocol (channel names, objective), the ``.wpi``/``.wpp`` plate files, and the images, named
``<title>_<well>_T0001F001L01A01Z01C01.tif`` (timepoint, field, timeline, action, z, channel);
CV8000 projections may live in a sub-folder such as ``Projection/``. The ``.mlf`` is the truth
for what exists; `cellvoyager_xml` parses the files, this module builds the `PlateLayout`.

Sites are renumbered to raster order (site 1 = top-left) from the stage X/Y (µm, Y upwards, as
for Harmony). Records the instrument marks ``bts:ZImageProcessing`` are projections and go to
``layout.projections``. ``ERR`` records (autofocus errors) are reported as warnings. The same
rules as for Harmony apply: names must stay inside the folder, wells must lie on the plate the
``.mrf`` declares, a listed file that does not exist is a compile error naming it.
"""

from __future__ import annotations

import re
from typing import Any

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.acquisition import time_interval_s, z_spacing_um
from prefect_hcs.formats.cellvoyager_xml import (
    MeasurementDetail,
    apply_mes,
    apply_wpi,
    parse_mlf,
    parse_mrf,
)
from prefect_hcs.formats.codecs import with_codec_check
from prefect_hcs.formats.completeness import find_padded, plane_completeness, plate_sort_key
from prefect_hcs.formats.fsio import display, list_names, listed, resolve
from prefect_hcs.formats.handlers import Evidence, register
from prefect_hcs.formats.harmony_sites import remap_fields
from prefect_hcs.formats.layout import ChannelInfo, ImageRef, PlateError, PlateLayout, image_axes
from prefect_hcs.formats.paths import ensure_inside, existing_files, join_inside
from prefect_hcs.formats.plate_bounds import check_in_plate
from prefect_hcs.formats.tiff import read_tiff_header
from prefect_hcs.formats.wells import well_id as make_well_id

__all__ = [
    "FILENAME_RE",
    "MLF_NAME",
    "MRF_NAME",
    "CellVoyagerHandler",
    "find_mlf",
    "open_cellvoyager",
]

MLF_NAME = "MeasurementData.mlf"
MRF_NAME = "MeasurementDetail.mrf"
FILENAME_RE = re.compile(
    r"^(?P<title>.+)_(?P<well>[A-Z]{1,2}\d{2,3})_T(\d{4})F(\d{3})L(\d{2})A(\d{2})Z(\d{2})C(\d{2})"
    r"\.tiff?$",
    re.IGNORECASE,
)


def find_mlf(fs: AbstractFileSystem, root: str) -> str | None:
    """Path of ``MeasurementData.mlf`` in the plate folder, or None."""
    return f"{root}/{MLF_NAME}" if list_names(fs, root).get(MLF_NAME) == "file" else None


def _read(fs: AbstractFileSystem, root: str, path: str) -> bytes:
    ensure_inside(fs, root, path, display(fs, path))
    with fs.open(path, "rb") as fh:
        return fh.read()


def _detail(
    fs: AbstractFileSystem, root: str, where: str, warnings: list[str]
) -> MeasurementDetail:
    names = list_names(fs, root)
    if names.get(MRF_NAME) != "file":
        raise PlateError(
            f"CellVoyager plate {where} has {MLF_NAME} but no {MRF_NAME}: the instrument writes "
            "both into the measurement folder. Copy the whole folder."
        )
    mrf_path = f"{root}/{MRF_NAME}"
    detail = parse_mrf(_read(fs, root, mrf_path), display(fs, mrf_path))
    for name, apply in ((detail.mes_name, apply_mes), (detail.wpi_name, apply_wpi)):
        if not name:
            continue
        path = join_inside(root, root, name, display(fs, mrf_path), f"companion file {name!r}")
        if path in existing_files(fs, [path]):
            apply(detail, _read(fs, root, path), display(fs, path))
        elif name == detail.mes_name:
            warnings.append(f"{where}: protocol {name} named in {MRF_NAME} is not in the folder; "
                            "channels are named A<action>_C<channel>")  # fmt: skip
    return detail


def _check_records(records: list[dict[str, Any]], detail: MeasurementDetail, root: str, where: str):
    for r in records:
        check_in_plate(r["row"], r["col"], detail.rows, detail.columns, where, r["label"])
        r["path"] = join_inside(root, root, r["name"], where, r["label"])
        for key in ("timepoint", "field", "channel"):
            if r[key] < 1:
                raise PlateError(f"{where}: {r['label']} has {key} {r[key]}; expected >= 1")
        if r["z"] < 1 and not r["projection"]:
            raise PlateError(f"{where}: {r['label']} has ZIndex {r['z']}; expected >= 1")


def _unlisted(fs: AbstractFileSystem, root: str, records: list[dict[str, Any]]) -> list[str]:
    listed_names = {r["path"] for r in records}
    extra = sorted(
        n
        for n, kind in list_names(fs, root).items()
        if kind == "file" and FILENAME_RE.match(n) and f"{root}/{n}" not in listed_names
    )
    if not extra:
        return []
    return [
        f"{len(extra)} image(s) in {display(fs, root)} are not listed in {MLF_NAME} and were "
        f"ignored: {listed(extra)}"
    ]


def _ref(r: dict[str, Any], site_of: dict) -> ImageRef:
    return ImageRef(
        well=make_well_id(r["row"] - 1, r["col"] - 1),
        site=site_of[(r["row"], r["col"], r["field"])],
        channel=r["channel"],
        z=1 if r["projection"] else r["z"],
        timepoint=r["timepoint"],
        path=r["path"],
        projection=r["projection"],
        stage_x_um=r["x"],
        stage_y_um=r["y"],
        z_um=r["z_um"],
        acquired_at=r["time"],
    )


def _channel_info(detail: MeasurementDetail, records: list[dict[str, Any]]) -> dict:
    actions = {r["channel"]: r["action"] for r in records}
    return {
        ch: detail.channels.get(ch) or ChannelInfo(name=f"A{actions[ch]:02d}_C{ch:02d}")
        for ch in sorted(actions)
    }


def _pixel_size(detail: MeasurementDetail, where: str, warnings: list[str]) -> float | None:
    sizes = [x for x, _ in detail.pixel_um.values() if x]
    if not sizes:
        warnings.append(
            f"{where}/{MRF_NAME} gives no pixel size (no bts:HorizontalPixelDimension): the "
            "output will carry no physical scale"
        )
        return None
    if len({round(x, 6) for x in sizes}) > 1:
        warnings.append(f"{where}: channels have different pixel sizes; using channel 1's")
    return round(sizes[0], 6)


def open_cellvoyager(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    fs: AbstractFileSystem | None = None,
) -> PlateLayout:
    """Discover a CellVoyager CV7000/CV8000 plate from its ``.mlf``/``.mrf`` measurement files."""
    fs, root = resolve(url, storage_options, fs)
    where = display(fs, root)
    mlf_path = find_mlf(fs, root)
    if mlf_path is None:
        raise PlateError(
            f"not a CellVoyager plate: no {MLF_NAME} in {where}. Point the URL at the "
            "measurement folder the CV7000/CV8000 wrote."
        )
    mlf_name = display(fs, mlf_path)
    warnings: list[str] = []
    records, errors = parse_mlf(_read(fs, root, mlf_path), mlf_name)
    if errors:
        warnings.append(f"{mlf_name} records {len(errors)} instrument error(s): {listed(errors)}")
    detail = _detail(fs, root, where, warnings)
    _check_records(records, detail, root, mlf_name)
    warnings += _unlisted(fs, root, records)
    exists = existing_files(fs, [r["path"] for r in records])
    missing = [r["name"] for r in records if r["path"] not in exists]
    if missing:
        raise PlateError(
            f"{len(missing)} image file(s) listed in {mlf_name} do not exist: {listed(missing)}. "
            "Copy the measurement folder again, completely."
        )
    for r in records:
        ensure_inside(fs, root, r["path"], mlf_name)
    return _layout(fs, url, root, records, detail, warnings, exists)


def _layout(
    fs: AbstractFileSystem,
    url: str,
    root: str,
    records: list[dict[str, Any]],
    detail: MeasurementDetail,
    warnings: list[str],
    sizes: dict[str, int],
) -> PlateLayout:
    where = display(fs, root)
    first = read_tiff_header(fs, records[0]["path"])
    pixel_um = _pixel_size(detail, where, warnings)
    tile_um = first.shape[1] * pixel_um if pixel_um else None
    site_of, grid, overlap = remap_fields(records, tile_um, first.shape, pixel_um, warnings)
    refs = [_ref(r, site_of) for r in records]
    images = sorted((r for r in refs if r.projection is None), key=plate_sort_key)
    projections = sorted((r for r in refs if r.projection), key=plate_sort_key)
    absent = plane_completeness(where, images, hint=f" (from {MLF_NAME})")
    axes = image_axes(images)
    channels = axes["channels"]
    info = {c: i for c, i in _channel_info(detail, records).items() if c in channels}
    z_step = z_spacing_um(images, warnings, where)
    return PlateLayout(
        plate_id=[p for p in root.split("/") if p][-1] if root.strip("/") else "plate",
        format="cellvoyager",
        url=url,
        **axes,
        grid=grid,
        tile_overlap=overlap,
        pixel_size_um=pixel_um,
        channel_names={c: i.name for c, i in info.items()},
        image_shape=first.shape,
        dtype=first.dtype,
        images=tuple(images),
        projections=tuple(projections),
        warnings=tuple(warnings),
        variant=f"CellVoyager {detail.target_system}" if detail.target_system else "CellVoyager",
        plate_barcode=detail.plate_name,
        z_spacing_um=z_step,
        time_interval_s=time_interval_s(images),
        objective=detail.objective,
        channel_info=info,
        absent=absent,
        padded=find_padded(fs, images, sizes),
    )


class CellVoyagerHandler:
    """Yokogawa CellVoyager CV7000/CV8000 measurements: recognised by ``MeasurementData.mlf``."""

    name = "cellvoyager"

    def detect(self, fs: AbstractFileSystem, root: str) -> Evidence:
        """METADATA when the measurement list is in the folder."""
        return Evidence.METADATA if find_mlf(fs, root) is not None else Evidence.NONE

    def open(
        self, url: str, storage_options: dict[str, Any] | None, fs: AbstractFileSystem
    ) -> PlateLayout:
        """`open_cellvoyager`, then one decoded plane per TIFF compression (`with_codec_check`)."""
        return with_codec_check(fs, open_cellvoyager(url, storage_options, fs=fs))


register(CellVoyagerHandler())
