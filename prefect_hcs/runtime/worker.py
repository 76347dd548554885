"""Execute step plans for a chunk of wells. What a Prefect task calls; no Prefect imports here.

Inputs come from the source plate (first step, or `pipeline_start`) or from the previous step's
intermediate; outputs go to the next intermediate or, for the last step, to the OME-Zarr plate
(or OMERO). Checkpoints and measurement tables are written where the plan says.
"""

from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefect_hcs.formats.arrays import fit_yx
from prefect_hcs.formats.wells import WellId
from prefect_hcs.pipeline.apply import AXES, WellData, apply_step, assemble_planes
from prefect_hcs.pipeline.plan import OutputPlan, PlatePlan, StepPlan, fingerprint_of
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime import objects, thumbnails
from prefect_hcs.runtime.cleanup import discard_well_outputs, remove_partial_fields
from prefect_hcs.runtime.plate_steps import resolve_plate_inputs, stale_plate_results
from prefect_hcs.runtime.stores import fsspec_options
from prefect_hcs.storage.object_store import file_stamp


@dataclass
class WellResult:
    """What one step did for one well: its time and the rows of each table it wrote."""

    well: str
    step: str
    seconds: float
    tables: dict[str, int] = field(default_factory=dict)  # table name -> rows written


def inputs_fingerprint(plan: StepPlan, storage_options: dict[str, Any]) -> str:
    """Identity of a well's source files: URL, size and stamp of every plane.

    The stamp is the version id or ETag on object stores, the mtime elsewhere (`file_stamp`). A
    replaced file changes it, so a retried run recomputes that well even if it had completed.
    """
    stamps = []
    for p in plan.source_planes:
        fs, path = hio.fs_for(p.url, storage_options)
        info = fs.info(path)
        stamps.append([p.url, info.get("size"), file_stamp(info)])
    return fingerprint_of(stamps)


def _load_input(
    plan: StepPlan, storage_options: dict[str, Any], output_options: dict[str, Any]
) -> tuple[WellData, str]:
    """The step's input pixels and the fingerprint of the well's source files.

    Source planes are read with the plate's options, intermediates with the output's.
    """
    if plan.read_from is None:
        return _read_source(plan, storage_options)
    blob = hio.read_bytes(plan.read_from, output_options)
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        array = npz["array"]
        coords = {a: tuple(int(v) for v in npz[f"coords_{a}"]) for a in AXES}
        inputs_fp = str(npz["inputs_fp"]) if "inputs_fp" in npz.files else ""
    return WellData(array, coords), inputs_fp


class InputChangedError(RuntimeError):
    """A source file changed while it was read (a copy still in progress?). Retried."""

    transient = True


def _read_source(plan: StepPlan, storage_options: dict[str, Any]) -> tuple[WellData, str]:
    """Read the source planes between two fingerprints; they must agree.

    The fingerprint recorded for resume then describes exactly the bytes that were read: a plane
    replaced during (or after) the read makes the stamps differ, so the well is read again here,
    and a later resume recomputes it instead of trusting a stale output.
    """
    shape = plan.metadata.get("plane_shape")
    expect = (int(shape[0]), int(shape[1])) if shape else None
    for _ in range(3):
        before = inputs_fingerprint(plan, storage_options)
        planes = [
            (p, hio.read_source_plane(p.url, storage_options, expect)) for p in plan.source_planes
        ]
        if inputs_fingerprint(plan, storage_options) == before:
            return assemble_planes(planes), before
    raise InputChangedError(
        f"well {plan.well}: its source files kept changing while they were read (is the plate "
        "still being copied?). Retry the plate once the copy is complete."
    )


def _save_intermediate(
    data: WellData, inputs_fp: str, url: str, storage_options: dict[str, Any]
) -> None:
    buf = io.BytesIO()
    arrays: dict[str, Any] = {"array": data.array, "inputs_fp": np.asarray(inputs_fp)}
    arrays |= {f"coords_{a}": np.asarray(data.coords[a], dtype=np.int64) for a in AXES}
    np.savez(buf, **arrays)
    hio.write_bytes(url, buf.getvalue(), storage_options)


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


def zarr_options(output: OutputPlan) -> dict[str, Any]:
    """fsspec options for the output OME-Zarr plate (credentials resolved in this process)."""
    return fsspec_options(output.zarr_url or "", output.storage_options)


#: Steps finished in this process whose in-memory input was freed, by plan fingerprint. A task
#: retry re-runs its whole chunk; a well already done in an earlier attempt has no input left, so
#: it is answered from here (memory intermediates never leave their process, so neither does this).
_DONE_IN_MEMORY: dict[str, WellResult] = {}


def run_well_step(
    plan: StepPlan, output: OutputPlan, storage_options: dict[str, Any] | None = None
) -> WellResult:
    """Execute one step plan for one well, start to finish.

    `storage_options` are the plate's; every output (intermediates, checkpoints, tables, the
    OME-Zarr plate, thumbnails, markers) uses the output's, `output.storage_options`.
    """
    opts = dict(storage_options or {})
    out = dict(output.storage_options)
    start = time.perf_counter()
    source = plan.read_from or ""
    in_memory = source.startswith("memory://")
    if in_memory and plan.fingerprint in _DONE_IN_MEMORY and not hio.exists(source):
        return _DONE_IN_MEMORY[plan.fingerprint]
    data, inputs_fp = _load_input(plan, opts, out)
    result, tables = apply_step(data, resolve_plate_inputs(plan, out))
    if plan.is_last:
        counts = _write_well_outputs(plan, result, tables, output, inputs_fp, out)
    else:
        with hio.write_errors(plan.output_url):
            _materialize(plan, result, out)
            counts = _write_tables(plan, tables, out)
            objects.write_well_tables(plan, tables, output)
            _save_intermediate(result, inputs_fp, plan.output_url, out)
    done = WellResult(plan.well, plan.step_name, time.perf_counter() - start, counts)
    if in_memory:
        # Free the input only now: a step that fails half-way must find it again when retried.
        if len(_DONE_IN_MEMORY) >= 100_000:  # a long-lived served process: forget the oldest
            _DONE_IN_MEMORY.pop(next(iter(_DONE_IN_MEMORY)), None)
        _DONE_IN_MEMORY[plan.fingerprint] = done
        hio.delete(source)
    return done


class StepFailedError(RuntimeError):
    """A step of a well chain failed; `step` names it, the cause is the original error."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"step {step!r}: {type(error).__name__}: {error}")
        self.step = step
        self.error = error


#: Wells whose whole chain finished in this process, by (task run, last plan's fingerprint): a task
#: retry re-runs its chunk and answers these from here instead of recomputing them. Keyed by the
#: task run so that another run of the same plan (a resume, a changed output setting) recomputes.
_DONE_CHAINS: dict[tuple[str, str], list[WellResult]] = {}


def run_well_chain(
    plans: list[StepPlan],
    output: OutputPlan,
    storage_options: dict[str, Any] | None = None,
    before_step: Callable[[], None] | None = None,
    attempt_key: str | None = None,
) -> list[WellResult]:
    """Execute several consecutive steps of one well, passing pixels from step to step in memory.

    `plans` are one well's step plans in order. A step reading exactly what the previous one
    wrote gets the array itself (no `.npz` encode, copy or decode; the intermediate is not
    written, since nothing else reads it); other inputs are loaded as `run_well_step` does.
    Checkpoints, tables and the final outputs are written exactly as there. The first step that
    fails raises `StepFailedError` (its cause is the original error). `before_step` is called
    before each step (the flow's output-lease check). With `attempt_key` (the task run's id), a
    well this process already finished under the same key is answered without recomputing it.
    """
    key = (attempt_key or "", plans[-1].fingerprint)
    if attempt_key and key in _DONE_CHAINS:
        return _DONE_CHAINS[key]
    opts = dict(storage_options or {})
    out = dict(output.storage_options)
    results: list[WellResult] = []
    carried: tuple[WellData, str] | None = None
    for i, plan in enumerate(plans):
        nxt = plans[i + 1] if i + 1 < len(plans) else None
        hand_off = nxt is not None and nxt.read_from == plan.output_url
        try:
            if before_step is not None:
                before_step()
            carried, done = _chain_step(plan, carried, hand_off, output, opts, out)
        except Exception as exc:
            raise StepFailedError(plan.step_name, exc) from exc
        results.append(done)
    if attempt_key:
        if len(_DONE_CHAINS) >= 100_000:  # a long-lived served process: forget the oldest
            _DONE_CHAINS.pop(next(iter(_DONE_CHAINS)), None)
        _DONE_CHAINS[key] = results
    return results


def _chain_step(
    plan: StepPlan,
    carried: tuple[WellData, str] | None,
    hand_off: bool,
    output: OutputPlan,
    opts: dict[str, Any],
    out: dict[str, Any],
) -> tuple[tuple[WellData, str] | None, WellResult]:
    """One step of `run_well_chain`: (what the next step gets in memory or None, its result)."""
    start = time.perf_counter()
    data, inputs_fp = carried if carried is not None else _load_input(plan, opts, out)
    carried = None
    result, tables = apply_step(data, resolve_plate_inputs(plan, out))
    del data  # the input is no longer needed: release it before the outputs are written
    if plan.is_last:
        counts = _write_well_outputs(plan, result, tables, output, inputs_fp, out)
    else:
        with hio.write_errors(plan.output_url):
            _materialize(plan, result, out)
            counts = _write_tables(plan, tables, out)
            objects.write_well_tables(plan, tables, output)
            if not hand_off:
                _save_intermediate(result, inputs_fp, plan.output_url, out)
    done = WellResult(plan.well, plan.step_name, time.perf_counter() - start, counts)
    return ((result, inputs_fp) if hand_off else None), done


def _write_well_outputs(
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
        _materialize(plan, result, opts)
        counts = _write_tables(plan, tables, opts)
        objects.write_well_tables(plan, tables, output)
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


def _uses_any(plans: list[StepPlan], result_urls: set[str]) -> bool:
    """Whether any of a well's step plans reads one of these plate-level results."""
    return any(
        isinstance(ref, dict) and ref.get("url") in result_urls
        for p in plans
        for ref in p.metadata.values()
    )


def completed_wells(
    plan: PlatePlan, storage_options: dict[str, Any] | None = None
) -> dict[str, str]:
    """Wells whose outputs are complete and valid for exactly this plan and these inputs.

    A well counts as done when its completion marker names the same chain of step fingerprints
    and the same source-file fingerprint, every output it should have is present (OME-Zarr
    fields with metadata and all chunks, tables, checkpoints), and no plate-level result it used
    is stale (e.g. a flat-field whose sampled files changed in another well). Anything else is
    recomputed.
    """
    opts = dict(storage_options or {})  # the plate's
    out = dict(plan.output.storage_options)
    done: dict[str, str] = {}
    writer = None
    if plan.output.image_backend == "zarr" and plan.output.zarr_url:
        from prefect_hcs.formats.omezarr import OmeZarrPlateWriter

        writer = OmeZarrPlateWriter(plan.output.zarr_url, zarr_options(plan.output))
    stale = stale_plate_results(plan, opts) if plan.plate_steps else set()
    for well in plan.wells:
        plans = plan.plans_for(well)
        if stale and _uses_any(plans, stale):
            continue
        last, first = plans[-1], plans[0]
        marker_url = done_marker_url(plan.output, well)
        try:
            if not hio.exists(marker_url, out):
                continue
            marker = json.loads(hio.read_bytes(marker_url, out))
        except (OSError, ValueError):
            continue
        if marker.get("chain_fingerprint") != last.chain_fingerprint:
            continue
        if marker.get("outputs") != output_fingerprint(plan.output, well):
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
        if all(hio.exists(u, out) for u in expected):
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
