"""Phase 5 of the compiler, plan paths: every URL a run reads or writes, per well and step.

Builds the `OutputPlan` (plate-level outputs, per-well completion markers) and one draft per
(well, step) — the `StepPlan` fields without fingerprints, as plain data so that phase 7 can
fingerprint 4,000 of them quickly — plans the plate-level steps they need, and checks that
every URL stays inside the root it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from prefect_hcs.config.enums import Backend
from prefect_hcs.formats.compact import share_fields_sets
from prefect_hcs.formats.fsio import join_url
from prefect_hcs.formats.wells import WellId
from prefect_hcs.pipeline import checks
from prefect_hcs.pipeline.backends import Backends
from prefect_hcs.pipeline.discover import Discovery
from prefect_hcs.pipeline.model import Step
from prefect_hcs.pipeline.physical import output_physical, site_positions_px
from prefect_hcs.pipeline.plan import InputPlane, OutputPlan, ZarrSettings
from prefect_hcs.pipeline.plate_steps import PlateStepPlan, plan_plate_steps
from prefect_hcs.pipeline.resolution import Resolution
from prefect_hcs.pipeline.shapes import PipelineCheck
from prefect_hcs.pipeline.urls import omero_plate_url, source_url
from prefect_hcs.storage.object_store import inherit_output_options

__all__ = ["PlannedPaths", "plan_paths"]

Draft = dict[str, Any]
_PLANES = TypeAdapter(tuple[InputPlane, ...])
#: Config sections a step plan records (and its fingerprint covers); the last step adds zarr.
_PLAN_SECTIONS = ("vfs_config", "step_materialization_config", "step_well_filter_config")


@dataclass(frozen=True)
class PlannedPaths:
    """The output plan; per step, the plan fields its wells share (`steps`); per (well, step),
    well-major, the well's own fields and ``step_index`` (`drafts`); the plate-level steps."""

    output: OutputPlan
    steps: list[Draft]
    drafts: list[Draft]
    source_json: dict[str, list[dict[str, Any]]]
    plate_steps: tuple[PlateStepPlan, ...]
    problems: tuple[str, ...]


def plan_paths(
    found: Discovery,
    res: Resolution,
    checked: PipelineCheck,
    chosen: Backends,
    output_storage_options: dict[str, Any] | None,
) -> PlannedPaths:
    """Phase 5: every URL of the run; a URL outside its root is a problem."""
    if output_storage_options is None:
        output_storage_options = inherit_output_options(
            res.layout.url, chosen.root, found.storage_options
        )
    tables = {
        f"{step.name}.{t}": join_url(chosen.root, f"{step.name}_{t}.csv")
        for step, c in zip(found.steps, checked.steps, strict=True)
        for t in c.special_outputs
    }
    output = output_plan(found, res, checked, chosen, tables, output_storage_options)
    steps = shared_fields(found, res, checked, chosen)
    source_json = source_planes_json(res)
    drafts = well_drafts(found, res, checked, chosen, source_json)
    problems = checks.write_containment_problems(_writes(steps, drafts, tables, chosen))
    functions = [s["function"] for s in steps]
    drafts, plate_steps = plan_plate_steps(functions, drafts, chosen.root)
    return PlannedPaths(output, steps, drafts, source_json, plate_steps, tuple(problems))


def output_plan(
    found: Discovery,
    res: Resolution,
    checked: PipelineCheck,
    chosen: Backends,
    tables: dict[str, str],
    storage_options: dict[str, Any],
) -> OutputPlan:
    """Where the run's durable outputs go, with the physical metadata the writer records."""
    layout, base = res.layout, res.base
    omero = chosen.root_backend == Backend.OMERO
    return OutputPlan(
        root=chosen.root,
        root_backend=chosen.root_backend,
        image_backend=chosen.image_backend,
        zarr_url=chosen.zarr_url,
        storage_options=dict(storage_options),
        tables=tables,
        fields_per_well=checked.sizes["site"],
        field_shape=checked.field_shape,
        pixel_size_um=layout.pixel_size_um,
        **output_physical(layout, res.wells, checked.sizes, found.stage),
        done_dirs={
            w: f"{omero_plate_url(layout)}/{w}/outputs/.hcs-done"
            if omero
            else join_url(chosen.root, ".hcs-done")
            for w in res.wells
        },
        zarr=ZarrSettings(
            compressor=base.value("zarr_config.compressor"),
            compression_level=base.value("zarr_config.compression_level"),
            chunk_size=base.value("zarr_config.chunk_size"),
        ),
        source_fingerprint=res.source_fingerprint,
    )


def well_drafts(
    found: Discovery,
    res: Resolution,
    checked: PipelineCheck,
    chosen: Backends,
    source_json: dict[str, list[dict[str, Any]]],
) -> list[Draft]:
    """One draft per (well, step), well-major: the well's own plan fields and its step index."""
    layout = res.layout
    metadata = plate_metadata(layout)
    kept = [_checkpoint_dir(b, step) for b, step in zip(chosen.steps, found.steps, strict=True)]
    drafts: list[Draft] = []
    for well in res.wells:
        planes = share_fields_sets(_PLANES.validate_python(source_json.get(well, ())))
        previous: str | None = None
        for i, step in enumerate(found.steps):
            c, b = checked.steps[i], chosen.steps[i]
            urls = _well_urls(layout, chosen, step, i, well, i == len(found.steps) - 1)
            meta = metadata
            if c.uses_positions:
                positions = site_positions_px(layout, well, found.stage)
                meta = {**metadata, "site_positions_px": positions}
            draft = {
                "step_index": i,
                **urls,
                **_checkpoint_urls(layout, step, b, well, res.step_wells[i].materializes, kept[i]),
                "well": well,
                "applies": well in res.step_wells[i].runs,
                "metadata": meta,
                "read_from": None if c.reads_source else previous,
                "source_planes": planes if c.reads_source else (),
                "special_outputs": _table_urls(layout, chosen, step, c.special_outputs, well),
            }
            previous = urls["output_url"]
            drafts.append(draft)
    return drafts


def plate_metadata(layout: Any) -> dict[str, Any]:
    """Plate metadata every step plan carries for the functions that declare it."""
    return {
        "grid": list(layout.grid) if layout.grid else None,
        "overlap": layout.tile_overlap,
        "pixel_size_um": layout.pixel_size_um,
        "channel_names": {str(k): v for k, v in layout.channel_names.items()},
        "plane_shape": list(layout.image_shape),  # every plane's header is checked against it
    }


def shared_fields(
    found: Discovery, res: Resolution, checked: PipelineCheck, chosen: Backends
) -> list[Draft]:
    """The fields of a step plan that every well of the step shares."""
    out = []
    last = len(found.steps) - 1
    for i, step in enumerate(found.steps):
        c, b = checked.steps[i], chosen.steps[i]
        sections = _PLAN_SECTIONS + (("zarr_config",) if i == last else ())
        config = {k: v for k, v in res.per_step[i].to_json().items() if k.startswith(sections)}
        out.append(
            {
                "plate_id": res.layout.plate_id,
                "step_index": i,
                "step_name": step.name,
                "function": step.func,
                "variable_components": c.variable_components,
                "group_by": step.group_by,
                "input_source": step.input_source,
                "read_backend": b.read,
                "write_backend": b.write,
                "materialized_backend": b.materialized,
                "is_last": i == last,
                "config": config,
                "code_versions": c.code_versions or {},
                "backend_reasons": {
                    "read_backend": b.read_reason,
                    "write_backend": b.write_reason,
                    "materialized_backend": b.materialized_reason,
                },
            }
        )
    return out


def source_planes_json(res: Resolution) -> dict[str, list[dict[str, Any]]]:
    """{well: its source planes with full URLs, as JSON}: what a plan's `source_planes` holds
    (validated once per well) and what its fingerprint hashes."""
    by_well: dict[str, list[dict[str, Any]]] = {}
    for r in res.layout.images:
        by_well.setdefault(r.well, []).append(
            {
                "site": r.site,
                "channel": r.channel,
                "z": r.z,
                "timepoint": r.timepoint,
                "url": source_url(res.layout, r.path),
            }
        )
    return by_well


def _checkpoint_dir(b: Any, step: Step) -> str:
    """A step's checkpoint folder on a filesystem (on OMERO it is per well)."""
    name = f"{step.name}.zarr" if b.materialized == Backend.ZARR else step.name
    return join_url(b.checkpoint_root, b.checkpoint_sub_dir, name)


def _well_urls(
    layout: Any, chosen: Backends, step: Step, index: int, well: str, last: bool
) -> dict[str, str]:
    """output_dir and output_url of one (well, step): the plate for the last step, else an
    intermediate."""
    if not last:  # the roots have no trailing '/', well names no '/' at all
        out_dir = f"{chosen.intermediate_root}/{well}"
        return {"output_dir": out_dir, "output_url": f"{out_dir}/{index:02d}_{step.name}.npy"}
    if chosen.image_backend == Backend.ZARR:
        out_dir = f"{chosen.zarr_url}/{WellId.parse(well).ngff_path}"
        return {"output_dir": out_dir, "output_url": out_dir}
    out_dir = f"{omero_plate_url(layout)}/{well}/outputs/images"
    return {"output_dir": out_dir, "output_url": f"{out_dir}/{well}.tif"}


def _checkpoint_urls(
    layout: Any, step: Step, b: Any, well: str, wells: frozenset[str], folder: str
) -> dict[str, str | None]:
    """materialized_output_dir and materialized_url of one (well, step), None when not kept;
    `folder` is the step's `_checkpoint_dir`."""
    if not b.checkpoints or well not in wells:
        return {"materialized_output_dir": None, "materialized_url": None}
    if b.materialized == Backend.OMERO:
        mat_dir = f"{omero_plate_url(layout)}/{well}/outputs/{b.checkpoint_sub_dir}/{step.name}"
        return {"materialized_output_dir": mat_dir, "materialized_url": f"{mat_dir}/{well}.tif"}
    if b.materialized == Backend.ZARR:
        return {"materialized_output_dir": folder, "materialized_url": f"{folder}/{well}"}
    ext = "npy" if b.materialized == Backend.MEMORY else "tif"
    return {"materialized_output_dir": folder, "materialized_url": f"{folder}/{well}.{ext}"}


def _table_urls(
    layout: Any, chosen: Backends, step: Step, tables: tuple[str, ...], well: str
) -> dict[str, str]:
    """{table: URL of this well's CSV}: on OMERO an annotation on the well."""
    if not tables:
        return {}
    if chosen.root_backend == Backend.OMERO:
        base = f"{omero_plate_url(layout)}/{well}/outputs/tables"
        return {t: f"{base}/{step.name}_{t}.csv" for t in tables}
    return {t: f"{chosen.root}/tables/{step.name}/{well}_{t}.csv" for t in tables}


def _omero_object(url: str) -> str:
    """``omero://plate_<id>`` of an ``omero://`` URL: the root its writes must stay in."""
    return "/".join(url.split("/", 3)[:3])


def _writes(
    steps: list[Draft], drafts: list[Draft], tables: dict[str, str], chosen: Backends
) -> list[tuple[str, str, str]]:
    """(what, URL, root it must stay in) for everything a run writes."""
    root = chosen.root
    out = [(f"plate table {name}", url, root) for name, url in tables.items()]
    for d in drafts:
        step = steps[d["step_index"]]
        what = f"step {step['step_name']!r} of well {d['well']}"
        url = d["output_url"]
        if step["write_backend"] == Backend.OMERO or url.startswith("omero://"):
            out.append((f"output of {what}", url, _omero_object(url)))
        else:
            inside = root if step["is_last"] else chosen.intermediate_root
            out.append((f"output of {what}", url, inside))
        if mat := d["materialized_url"]:
            b = chosen.steps[d["step_index"]]
            mat_root = _omero_object(mat) if mat.startswith("omero://") else b.checkpoint_root
            out.append((f"checkpoint of {what}", mat, mat_root))
        for name, url in d["special_outputs"].items():
            base = _omero_object(url) if url.startswith("omero://") else root
            out.append((f"table {name} of {what}", url, base))
    return out
