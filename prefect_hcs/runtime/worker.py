"""Execute step plans for a chunk of wells. What a Prefect task calls; no Prefect imports here.

Inputs come from the source plate (first step, or `pipeline_start`) or from the previous step's
intermediate; outputs go to the next intermediate or, for the last step, to the OME-Zarr plate
(or OMERO). Checkpoints and measurement tables are written where the plan says.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefect_hcs.pipeline.apply import AXES, WellData, apply_step, assemble_planes
from prefect_hcs.pipeline.plan import OutputPlan, PlatePlan, StepPlan, fingerprint_of
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime import thumbnails


@dataclass
class WellResult:
    well: str
    step: str
    seconds: float
    tables: dict[str, int] = field(default_factory=dict)  # table name -> rows written


def inputs_fingerprint(plan: StepPlan, storage_options: dict[str, Any]) -> str:
    """Identity of a well's source files: URL, size and modification stamp of every plane.

    A replaced file changes it, so a retried run recomputes that well even if it had completed.
    """
    stamps = []
    for p in plan.source_planes:
        fs, path = hio.fs_for(p.url, storage_options)
        info = fs.info(path)
        stamp = next(
            (info[k] for k in ("ETag", "etag", "mtime", "LastModified", "created") if k in info),
            None,
        )
        stamps.append([p.url, info.get("size"), str(stamp)])
    return fingerprint_of(stamps)


def _load_input(plan: StepPlan, storage_options: dict[str, Any]) -> tuple[WellData, str]:
    """The step's input pixels and the fingerprint of the well's source files."""
    if plan.read_from is None:
        planes = [(p, hio.read_source_plane(p.url, storage_options)) for p in plan.source_planes]
        return assemble_planes(planes), inputs_fingerprint(plan, storage_options)
    blob = hio.read_bytes(plan.read_from, storage_options)
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        array = npz["array"]
        coords = {a: tuple(int(v) for v in npz[f"coords_{a}"]) for a in AXES}
        inputs_fp = str(npz["inputs_fp"]) if "inputs_fp" in npz.files else ""
    return WellData(array, coords), inputs_fp


def _save_intermediate(
    data: WellData, inputs_fp: str, url: str, storage_options: dict[str, Any]
) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        array=data.array,
        inputs_fp=np.asarray(inputs_fp),
        **{f"coords_{a}": np.asarray(data.coords[a], dtype=np.int64) for a in AXES},
    )
    hio.write_bytes(url, buf.getvalue(), storage_options)


def done_marker_url(output: OutputPlan, well: str) -> str:
    """On OMERO the marker is an annotation on the well itself; elsewhere a file per well."""
    return f"{output.done_dir.replace('{well}', well)}/{well}.json"


def _write_done_marker(
    plan: StepPlan, output: OutputPlan, inputs_fp: str, storage_options: dict[str, Any]
) -> None:
    """Written last, after every output of the well: its presence means the well is complete."""
    marker = {"well": plan.well, "chain_fingerprint": plan.chain_fingerprint, "inputs": inputs_fp}
    hio.write_bytes(
        done_marker_url(output, plan.well), json.dumps(marker).encode(), storage_options
    )


def _materialize(plan: StepPlan, data: WellData, storage_options: dict[str, Any]) -> None:
    if plan.materialized_url is None:
        return
    if plan.materialized_backend == "zarr":
        import zarr

        from prefect_hcs.formats.omezarr import open_store

        store = open_store(plan.materialized_output_dir or "", storage_options=None)
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
        hio.write_bytes(thumbnails.thumbnail_url(output.done_dir, plan.well), png, storage_options)
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

    writer = OmeZarrPlateWriter(output.zarr_url or "", storage_options=None)
    array = fit_yx(data.array, output.field_shape)
    for s in range(array.shape[3]):
        writer.write_field(
            plan.well,
            s,
            array[:, :, :, s],
            channel_names=list(output.channel_names)[: array.shape[1]],
            **output.field_metadata(plan.well, s),
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
    data, inputs_fp = _load_input(plan, opts)
    result, tables = apply_step(data, plan)
    _materialize(plan, result, opts)
    counts = _write_tables(plan, tables, opts)
    if plan.is_last:
        _write_final(plan, result, output, opts)
        _write_done_marker(plan, output, inputs_fp, opts)
    else:
        _save_intermediate(result, inputs_fp, plan.output_url, opts)
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
    remove_partial_files(output)
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


def completed_wells(
    plan: PlatePlan, storage_options: dict[str, Any] | None = None
) -> dict[str, str]:
    """Wells whose outputs are complete and valid for exactly this plan and these inputs.

    A well counts as done when its completion marker names the same chain of step fingerprints
    and the same source-file fingerprint, and every output it should have is present (OME-Zarr
    fields with metadata and all chunks, tables, checkpoints). Anything else is recomputed.
    """
    opts = dict(storage_options or {})
    done: dict[str, str] = {}
    writer = None
    if plan.output.image_backend == "zarr" and plan.output.zarr_url:
        from prefect_hcs.formats.omezarr import OmeZarrPlateWriter

        writer = OmeZarrPlateWriter(plan.output.zarr_url)
    for well in plan.wells:
        plans = plan.plans_for(well)
        last, first = plans[-1], plans[0]
        marker_url = done_marker_url(plan.output, well)
        try:
            if not hio.exists(marker_url, opts):
                continue
            marker = json.loads(hio.read_bytes(marker_url, opts))
        except (OSError, ValueError):
            continue
        if marker.get("chain_fingerprint") != last.chain_fingerprint:
            continue
        try:
            if marker.get("inputs") != inputs_fingerprint(first, opts):
                continue
        except OSError:
            continue
        expected = [u for p in plans for u in p.special_outputs.values()]
        expected += [
            p.materialized_url
            for p in plans
            if p.materialized_url and p.materialized_backend != "zarr"
        ]
        if writer is None:
            expected.append(last.output_url)
        elif not all(
            writer.field_complete(well, f, check_chunks=True)
            for f in range(plan.output.fields_per_well)
        ):
            continue
        if all(hio.exists(u, opts) for u in expected):
            done[well] = marker_url
    return done


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
