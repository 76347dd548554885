"""Nothing half-written survives: remove a well's outputs when writing them failed, and sweep
what a killed run left (temporary files, OME-Zarr fields whose metadata was never written).

A field's multiscales metadata is written after its arrays, so "group without metadata" is exactly
"a writer died or failed half-way". No Prefect here.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prefect_hcs.pipeline.plan import OutputPlan, StepPlan
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime.stores import fsspec_options


def discard_well_outputs(plan: StepPlan, output: OutputPlan, opts: dict[str, Any]) -> None:
    """Best-effort removal of everything the last step of `plan.well` writes.

    Used when writing them failed (disk full, permission): the well then has no fields, no
    tables, no marker, and is recomputed by the next run.
    """
    from prefect_hcs.runtime.thumbnails import thumbnail_url

    urls = [
        *plan.special_outputs.values(),
        _marker_url(output, plan.well),
        thumbnail_url(output.done_dir(plan.well), plan.well),
    ]
    if output.image_backend != "zarr":
        urls.append(plan.output_url)
    for url in urls:
        with contextlib.suppress(Exception):
            hio.delete(url, opts)
    if output.image_backend == "zarr" and output.zarr_url:
        _remove_fields(output, plan.well, range(output.fields_per_well))


def remove_partial_fields(output: OutputPlan, wells: tuple[str, ...]) -> list[str]:
    """Delete field groups of `wells` that exist but have no complete metadata; return them."""
    if output.image_backend != "zarr" or not output.zarr_url:
        return []
    from prefect_hcs.formats.omezarr import OmeZarrPlateWriter, field_path, read_plate_attrs

    fs, root = hio.fs_for(output.zarr_url, output.storage_options)
    zarr_opts = fsspec_options(output.zarr_url, output.storage_options)
    attrs = read_plate_attrs(output.zarr_url, zarr_opts) if fs.isdir(root) else None
    if "prefect_hcs" not in (attrs or {}):
        return []  # nothing there, or not a plate we wrote: never touched
    writer = OmeZarrPlateWriter(output.zarr_url, zarr_opts)
    removed = []
    for well in wells:
        for f in range(output.fields_per_well):
            path = f"{root.rstrip('/')}/{field_path(well, f)}"
            if fs.exists(path) and not writer.field_complete(well, f):
                fs.rm(path, recursive=True)
                removed.append(path)
    return removed


def _remove_fields(output: OutputPlan, well: str, fields: range) -> None:
    from prefect_hcs.formats.omezarr import field_path

    fs, root = hio.fs_for(output.zarr_url or "", output.storage_options)
    for f in fields:
        path = f"{root.rstrip('/')}/{field_path(well, f)}"
        with contextlib.suppress(Exception):
            if fs.exists(path):
                fs.rm(path, recursive=True)


def _marker_url(output: OutputPlan, well: str) -> str:
    return f"{output.done_dir(well)}/{well}.json"
