"""Objects of a run inside the OME-Zarr plate: NGFF label images, Parquet tables, well aggregates.

Called by the worker with a few lines (so the worker keeps one job): after a well's step wrote
its CSV tables, `write_well_tables` writes every table of the step also as Parquet inside the
plate (``tables/<step>_<name>/<well>.parquet``); after the last step wrote the field images,
`write_well_labels` writes the label images the step returned (e.g. ``nuclei`` of
``measure_objects``) as NGFF labels of each field; `merge_plate_tables` writes the plate-level
Parquet tables at finalize; `well_aggregates` gives the per-well object count, mean area and mean
intensity the UI summary shows. Everything happens before the well's completion marker, so an
interrupted well is recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from prefect_hcs.pipeline.apply import WellData
from prefect_hcs.pipeline.plan import OutputPlan, StepPlan
from prefect_hcs.runtime.stores import zarr_options

__all__ = [
    "merge_plate_tables",
    "objects_summary",
    "well_aggregates",
    "write_well_labels",
    "write_well_tables",
]


def _table_name(step: str, name: str) -> str:
    return f"{step}_{name}"


def _is_label_rows(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and all(isinstance(r.get("array"), np.ndarray) for r in rows)


def write_well_tables(
    plan: StepPlan, tables: Mapping[str, list[dict[str, Any]]], output: OutputPlan
) -> None:
    """Each declared table of this step and well as Parquet inside the OME-Zarr plate."""
    if output.image_backend != "zarr" or not output.zarr_url:
        return
    from prefect_hcs.formats.tables import table_url, write_table

    for name in plan.special_outputs:
        url = table_url(output.zarr_url, _table_name(plan.step_name, name), plan.well)
        write_table(url, tables.get(name, []), storage_options=zarr_options(output))


def write_well_labels(
    plan: StepPlan,
    data: WellData,
    tables: Mapping[str, list[dict[str, Any]]],
    output: OutputPlan,
) -> list[str]:
    """Write the label images this (last) step returned as NGFF labels of the well's fields.

    A label row carries the array of one group (its other components: timepoint, z, site) shaped
    like the group's planes; it lands in the field of its site, padded/cropped like the image.
    Returns the URLs of the label images written.
    """
    if output.image_backend != "zarr" or not output.zarr_url:
        return []
    from prefect_hcs.formats.arrays import fit_yx
    from prefect_hcs.formats.labels import write_labels
    from prefect_hcs.formats.omezarr import OmeZarrPlateWriter

    writer = OmeZarrPlateWriter(output.zarr_url, zarr_options(output))
    t_n, _, z_n, s_n = data.array.shape[:4]
    written = []
    for name, rows in tables.items():
        if name in plan.special_outputs or not _is_label_rows(list(rows)):
            continue
        full = np.zeros((t_n, 1, z_n, s_n, *output.field_shape), dtype=np.uint32)
        for row in rows:
            idx = [_index(data, axis, row) for axis in ("timepoint", "z", "site")]
            plane = np.asarray(row["array"]).reshape(row["array"].shape[-2:])
            full[idx[0], 0, idx[1], idx[2]] = fit_yx(plane, output.field_shape)
        for s in range(s_n):
            written.append(write_labels(writer, plan.well, s, name, full[:, :, :, s]))
    return written


def _index(data: WellData, axis: str, row: Mapping[str, Any]) -> Any:
    """Index of the row's label on ``axis``; every index when the group spans the axis."""
    if axis not in row:
        return slice(None)
    return data.coords[axis].index(int(row[axis]))


def merge_plate_tables(output: OutputPlan, step_plans: Iterable[StepPlan]) -> list[str]:
    """Plate-level Parquet tables (all wells, in well order) next to the per-well files."""
    if output.image_backend != "zarr" or not output.zarr_url:
        return []
    from prefect_hcs.formats.tables import merge_well_tables, table_url

    wells: dict[str, list[str]] = {}
    for plan in step_plans:
        for name in plan.special_outputs:
            wells.setdefault(_table_name(plan.step_name, name), []).append(plan.well)
    urls = []
    for table, names in wells.items():
        merge_well_tables(output.zarr_url, table, list(dict.fromkeys(names)), zarr_options(output))
        urls.append(table_url(output.zarr_url, table))
    return urls


def well_aggregates(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per well: ``objects`` (count), ``mean_area_px`` and ``mean_intensity`` (mean over objects
    of their mean intensity in the first measured channel), from an objects table's rows."""
    per: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if "well" in row:
            per.setdefault(str(row["well"]), []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for well, objs in per.items():
        key = next((k for k in objs[0] if str(k).startswith("intensity_mean_c")), None)
        areas = [float(o["area"]) for o in objs if o.get("area") not in (None, "")]
        means = [float(o[key]) for o in objs if key and o.get(key) not in (None, "")]
        out[well] = {
            "objects": len(objs),
            "mean_area_px": round(sum(areas) / len(areas), 2) if areas else None,
            "mean_intensity": round(sum(means) / len(means), 2) if means else None,
        }
    return out


def objects_summary(
    plan: Any, tables: Mapping[str, str] | None, storage_options: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per well of ``plan`` (a PlatePlan), in its well order, the `well_aggregates` of its
    objects tables (the plate CSVs when finalized, else each well's own), or {} when the
    pipeline measures no objects. Feeds the UI's per-well summary artifact."""
    from prefect_hcs.runtime import io as hio

    keys = [k for k in plan.output.tables if k.endswith(".objects")]
    if not keys:
        return [{} for _ in plan.wells]
    if tables:
        urls = [tables[k] for k in keys if k in tables]
    else:
        wanted = {tuple(k.split(".", 1)) for k in keys}
        urls = [
            p.special_outputs[n]
            for p in plan.step_plans
            for s, n in wanted
            if p.step_name == s and n in p.special_outputs
        ]
    rows: list[dict[str, Any]] = []
    for url in urls:
        try:
            rows.extend(hio.csv_to_rows(hio.read_bytes(url, dict(storage_options))))
        except (OSError, ValueError):
            continue
    agg = well_aggregates(rows)
    empty = {"objects": None, "mean_area_px": None, "mean_intensity": None}
    return [agg.get(w, empty) for w in plan.wells]
