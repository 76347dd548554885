"""Execute step plans for a chunk of wells. What a Prefect task calls; no Prefect imports here.

Inputs come from the source plate (first step, or `pipeline_start`) or from the previous step's
intermediate; outputs go to the next intermediate or, for the last step, to the OME-Zarr plate
(or OMERO). Checkpoints and measurement tables are written where the plan says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefect_hcs.pipeline.apply import AXES, WellData, apply_step, assemble_planes
from prefect_hcs.pipeline.plan import OutputPlan, StepPlan
from prefect_hcs.runtime import io as hio

_COORDS_KEY = "prefect_hcs_coords"


@dataclass
class WellResult:
    well: str
    step: str
    seconds: float
    tables: dict[str, int] = field(default_factory=dict)  # table name -> rows written


def _load_input(plan: StepPlan, storage_options: dict[str, Any]) -> WellData:
    if plan.read_from is None:
        planes = [(p, hio.read_source_plane(p.url, storage_options)) for p in plan.source_planes]
        return assemble_planes(planes)
    blob = hio.read_bytes(plan.read_from, storage_options)
    with np.load(__import__("io").BytesIO(blob), allow_pickle=False) as npz:
        array = npz["array"]
        coords = {a: tuple(int(v) for v in npz[f"coords_{a}"]) for a in AXES}
    return WellData(array, coords)


def _save_intermediate(data: WellData, url: str, storage_options: dict[str, Any]) -> None:
    import io

    buf = io.BytesIO()
    np.savez(
        buf,
        array=data.array,
        **{f"coords_{a}": np.asarray(data.coords[a], dtype=np.int64) for a in AXES},
    )
    hio.write_bytes(url, buf.getvalue(), storage_options)


def _materialize(plan: StepPlan, data: WellData, storage_options: dict[str, Any]) -> None:
    if plan.materialized_url is None:
        return
    if plan.materialized_backend == "zarr":
        import zarr

        from prefect_hcs.formats.omezarr import open_store

        store = open_store(plan.materialized_output_dir or "", storage_options=None)
        root = zarr.open_group(store=store, mode="a", zarr_format=3)
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


def _write_final(
    plan: StepPlan, data: WellData, output: OutputPlan, storage_options: dict[str, Any]
) -> None:
    if output.image_backend == "omero":
        hio.write_bytes(plan.output_url, hio.array_to_tiff(data.array, "TCZQYX"), storage_options)
        return
    from prefect_hcs.formats.omezarr import OmeZarrPlateWriter

    writer = OmeZarrPlateWriter(output.zarr_url or "", storage_options=None)
    array = fit_yx(data.array, output.field_shape)
    for s in range(array.shape[3]):
        writer.write_field(
            plan.well,
            s,
            array[:, :, :, s],
            channel_names=list(output.channel_names)[: array.shape[1]],
            pixel_size_um=output.pixel_size_um,
            compressor=str(output.zarr["compressor"]),
            level=int(output.zarr["compression_level"]),
            chunk_yx=int(output.zarr["chunk_size"]),
        )


def fit_yx(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pad (zeros, bottom/right) or crop the last two axes to `shape`."""
    y, x = array.shape[-2:]
    ty, tx = shape
    if (y, x) == (ty, tx):
        return array
    out = np.zeros(array.shape[:-2] + (ty, tx), dtype=array.dtype)
    out[..., : min(y, ty), : min(x, tx)] = array[..., : min(y, ty), : min(x, tx)]
    return out


#: Steps finished in this process whose in-memory input was freed, by plan fingerprint. A task
#: retry re-runs its whole chunk; a well already done in an earlier attempt has no input left, so
#: it is answered from here (memory intermediates never leave their process, so neither does this).
_DONE_IN_MEMORY: dict[str, WellResult] = {}


def run_well_step(
    plan: StepPlan, output: OutputPlan, storage_options: dict[str, Any] | None = None
) -> WellResult:
    """Execute one step plan for one well, start to finish."""
    opts = dict(storage_options or {})
    start = time.perf_counter()
    source = plan.read_from or ""
    in_memory = source.startswith("memory://")
    if in_memory and plan.fingerprint in _DONE_IN_MEMORY and not hio.exists(source):
        return _DONE_IN_MEMORY[plan.fingerprint]
    data = _load_input(plan, opts)
    result, tables = apply_step(data, plan)
    _materialize(plan, result, opts)
    counts = _write_tables(plan, tables, opts)
    if plan.is_last:
        _write_final(plan, result, output, opts)
    else:
        _save_intermediate(result, plan.output_url, opts)
    done = WellResult(plan.well, plan.step_name, time.perf_counter() - start, counts)
    if in_memory:
        # Free the input only now: a step that fails half-way must find it again when retried.
        if len(_DONE_IN_MEMORY) >= 100_000:  # a long-lived served process: forget the oldest
            _DONE_IN_MEMORY.pop(next(iter(_DONE_IN_MEMORY)), None)
        _DONE_IN_MEMORY[plan.fingerprint] = done
        hio.delete(source)
    return done


def prepare_outputs(
    output: OutputPlan, plate_id: str, wells: tuple[str, ...], overwrite: bool
) -> None:
    """Write plate-level metadata once, before any well runs (never by racing workers)."""
    if output.image_backend != "zarr":
        return
    from prefect_hcs.formats.omezarr import OmeZarrPlateWriter

    OmeZarrPlateWriter(output.zarr_url or "").initialize(
        plate_name=plate_id,
        wells=list(wells),
        fields_per_well=output.fields_per_well,
        channel_names=list(output.channel_names),
        pixel_size_um=output.pixel_size_um,
        source_fingerprint=output.source_fingerprint,
        overwrite=overwrite,
    )


def finalize_outputs(
    output: OutputPlan,
    step_plans: list[StepPlan],
    storage_options: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Merge per-well tables into plate tables and mark the OME-Zarr plate complete."""
    opts = dict(storage_options or {})
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

        OmeZarrPlateWriter(output.zarr_url or "").finalize(summary=summary)
    return written
