"""Plate-level outputs: prepared once before any well runs, finalized once after the last.

Preparing removes a killed run's leftovers and writes the OME-Zarr plate metadata; finalizing
merges the per-well tables into plate tables and marks the plate complete. No Prefect here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prefect_hcs.pipeline.plan import OutputPlan, StepPlan
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime import objects
from prefect_hcs.runtime.cleanup import remove_partial_fields
from prefect_hcs.runtime.stores import zarr_options


def _output_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Plate-level writes: a full or read-only output becomes the clear OutputWriteError."""

    @functools.wraps(func)
    def wrapper(output: OutputPlan, *args: Any, **kwargs: Any) -> Any:
        with hio.write_errors(output.zarr_url or output.root):
            return func(output, *args, **kwargs)

    return wrapper


@_output_errors
def prepare_outputs(
    output: OutputPlan, plate_id: str, wells: tuple[str, ...], overwrite: bool
) -> None:
    """Write plate-level metadata once, before any well runs (never by racing workers).

    Leftovers of a killed run go first: temporary files and half-written OME-Zarr fields.
    """
    remove_partial_files(output)
    remove_partial_fields(output, wells)
    if output.image_backend != "zarr":
        return
    from prefect_hcs.formats.omezarr import OmeZarrPlateWriter

    OmeZarrPlateWriter(output.zarr_url or "", zarr_options(output)).initialize(
        plate_name=plate_id,
        wells=list(wells),
        fields_per_well=output.fields_per_well,
        channel_names=list(output.channel_names),
        pixel_size_um=output.pixel_size_um,
        source_fingerprint=output.source_fingerprint,
        overwrite=overwrite,
    )


@_output_errors
def finalize_outputs(
    output: OutputPlan,
    step_plans: list[StepPlan],
    storage_options: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Merge per-well tables into plate tables and mark the OME-Zarr plate complete.

    Every file here is an output, so the output's storage options are used.
    """
    opts = dict(output.storage_options)
    written: dict[str, str] = {}
    for key, url in output.tables.items():
        step, name = key.split(".", 1)
        rows: list[dict[str, Any]] = []
        for plan in step_plans:
            if plan.step_name == step and name in plan.special_outputs:
                rows.extend(hio.csv_to_rows(hio.read_bytes(plan.special_outputs[name], opts)))
        hio.write_bytes(url, hio.rows_to_csv(rows), opts)
        written[key] = url
    if output.image_backend == "zarr":
        from prefect_hcs.formats.omezarr import OmeZarrPlateWriter

        objects.merge_plate_tables(output, step_plans)
        OmeZarrPlateWriter(output.zarr_url or "", zarr_options(output)).finalize(summary=summary)
    return written


def remove_partial_files(output: OutputPlan) -> list[str]:
    """Delete leftovers of interrupted atomic writes (`*.tmp-*`) under the output root."""
    if output.root_backend != "disk":
        return []
    fs, root = hio.fs_for(output.root, output.storage_options)
    if not fs.exists(root):
        return []
    removed = [p for p in fs.find(root) if ".tmp-" in p.rsplit("/", 1)[-1]]
    for path in removed:
        fs.rm(path)
    return removed
