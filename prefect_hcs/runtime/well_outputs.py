"""A well's outputs: checkpoints, tables, the final image (OME-Zarr fields or an OMERO TIFF),
thumbnail and, last, the completion marker. No Prefect imports here.
"""

from __future__ import annotations

import json
from typing import Any

from prefect_hcs.formats.arrays import fit_yx
from prefect_hcs.formats.wells import WellId
from prefect_hcs.pipeline.apply import WellData
from prefect_hcs.pipeline.plan import OutputPlan, StepPlan, fingerprint_of
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime import objects, thumbnails
from prefect_hcs.runtime.cleanup import discard_well_outputs
from prefect_hcs.runtime.stores import fsspec_options, zarr_options


def done_marker_url(output: OutputPlan, well: str) -> str:
    """On OMERO the marker is an annotation on the well itself; elsewhere a file per well."""
    return f"{output.done_dir(well)}/{well}.json"


def _write_done_marker(
    plan: StepPlan, output: OutputPlan, inputs_fp: str, storage_options: dict[str, Any]
) -> None:
    """Written last, after every output of the well: its presence means the well is complete."""
    marker = {
        "well": plan.well,
        "chain_fingerprint": plan.chain_fingerprint,
        "inputs": inputs_fp,
        "outputs": output_fingerprint(output, plan.well),
    }
    hio.write_bytes(
        done_marker_url(output, plan.well), json.dumps(marker).encode(), storage_options
    )


def output_fingerprint(output: OutputPlan, well: str) -> str:
    """What a well's final output depends on besides its own steps: field shape, channels, pixel
    size, zarr encoding, and this well's own entries of per-well settings (field translations,
    absent planes…). A plate-wide change recomputes every well, a per-well one only that well;
    the source-plate fingerprint, plate table URLs and storage options are left out.
    """
    data = output.model_dump(
        mode="json", exclude={"source_fingerprint", "storage_options", "tables", "done_dirs"}
    )
    keep = {k: (v.get(well) if isinstance(v, dict) and k != "zarr" else v) for k, v in data.items()}
    return fingerprint_of(keep)


def _materialize(plan: StepPlan, data: WellData, storage_options: dict[str, Any]) -> None:
    if plan.materialized_url is None:
        return
    if plan.materialized_backend == "zarr":
        import zarr

        from prefect_hcs.formats.omezarr import open_store

        url = plan.materialized_output_dir or ""
        store = open_store(url, storage_options=fsspec_options(url, storage_options))
        try:
            root = zarr.open_group(store=store, mode="a", zarr_format=3)
        except zarr.errors.ContainsGroupError:  # another well created the group concurrently
            root = zarr.open_group(store=store, mode="r+", zarr_format=3)
        arr = root.create_array(
            plan.well,
            shape=data.array.shape,
            dtype=data.array.dtype,
            chunks=(1, 1, 1, 1, *data.array.shape[-2:]),
            overwrite=True,
            dimension_names=("t", "c", "z", "site", "y", "x"),
        )
        arr[...] = data.array
        return
    if plan.materialized_backend == "memory":
        hio.write_bytes(plan.materialized_url, hio.array_to_npy(data.array))
        return
    hio.write_bytes(plan.materialized_url, hio.array_to_tiff(data.array, "TCZQYX"), storage_options)


def _write_tables(
    plan: StepPlan, tables: dict[str, list[dict[str, Any]]], storage_options: dict[str, Any]
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, url in plan.special_outputs.items():
        rows = tables.get(name, [])
        hio.write_bytes(url, hio.rows_to_csv(rows), storage_options)
        counts[name] = len(rows)
    return counts


def _write_thumbnail(
    plan: StepPlan, data: WellData, output: OutputPlan, storage_options: dict[str, Any]
) -> None:
    """A ~96 px PNG for the UI's thumbnail artifact; cosmetic, so it never fails the well."""
    try:
        png = thumbnails.encode_png(data.array)
        hio.write_bytes(
            thumbnails.thumbnail_url(output.done_dir(plan.well), plan.well), png, storage_options
        )
    except Exception:  # noqa: BLE001 - a missing preview must not cost a computed well
        return


def _write_final(
    plan: StepPlan, data: WellData, output: OutputPlan, storage_options: dict[str, Any]
) -> None:
    _write_thumbnail(plan, data, output, storage_options)
    if output.image_backend == "omero":
        hio.write_bytes(plan.output_url, hio.array_to_tiff(data.array, "TCZQYX"), storage_options)
        return
    from prefect_hcs.formats.omezarr import OmeZarrPlateWriter

    writer = OmeZarrPlateWriter(output.zarr_url or "", storage_options=zarr_options(output))
    array = fit_yx(data.array, output.field_shape)
    for s in range(array.shape[3]):
        writer.write_field(
            plan.well,
            s,
            array[:, :, :, s],
            channel_names=list(output.channel_names)[: array.shape[1]],
            **output.field_metadata(plan.well, s),
            compressor=str(output.zarr.compressor),
            level=output.zarr.compression_level,
            chunk_yx=output.zarr.chunk_size,
        )


def write_well_outputs(
    plan: StepPlan,
    result: WellData,
    tables: dict[str, list[dict[str, Any]]],
    output: OutputPlan,
    inputs_fp: str,
    opts: dict[str, Any],
) -> dict[str, int]:
    """The well's final outputs, marker last; on failure none of them is left behind."""
    where = output.zarr_url or plan.output_url
    if output.image_backend == "zarr" and output.zarr_url:
        where = f"{output.zarr_url.rstrip('/')}/{WellId.parse(plan.well).ngff_path}"
    try:
        counts = write_step_outputs(plan, result, tables, output, opts)
        _write_final(plan, result, output, opts)
        objects.write_well_labels(plan, result, tables, output)
        _write_done_marker(plan, output, inputs_fp, opts)
    except Exception as exc:
        discard_well_outputs(plan, output, opts)
        clear = hio.output_write_error(exc, where)
        if clear is None:
            raise
        raise clear from exc
    return counts


def write_step_outputs(
    plan: StepPlan,
    result: WellData,
    tables: dict[str, list[dict[str, Any]]],
    output: OutputPlan,
    opts: dict[str, Any],
) -> dict[str, int]:
    """What every step writes for a well: its checkpoint, its CSV tables and their Parquet
    copies. Returns {table: rows written}."""
    _materialize(plan, result, opts)
    counts = _write_tables(plan, tables, opts)
    objects.write_well_tables(plan, tables, output)
    return counts
