"""The compiler: (plate layout, config layers, pipeline) → a validated, frozen `PlatePlan`.

Everything that can be decided before reading pixels is decided here, and every mistake that can
be caught here is: unknown functions or kwargs, a mapping pattern naming channels the plate does
not have, a step whose output nobody reads, a backend the plate source cannot take, an output
location equal to (or inside) the input plate, an empty well selection. Errors name the step, the
config field and the fix. The compiler is pure: no Prefect, no pixel I/O, safe to run anywhere.
"""

from __future__ import annotations

import math
import posixpath
from typing import Any

from pydantic import BaseModel

from prefect_hcs.config.enums import Backend, TaskRunnerKind
from prefect_hcs.config.resolver import ResolvedConfig, resolve
from prefect_hcs.errors import UserFacingError
from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.formats.physical import stage_positions
from prefect_hcs.formats.report import layout_report
from prefect_hcs.formats.wells import WellId
from prefect_hcs.pipeline import checks
from prefect_hcs.pipeline.builtin import fit_to_plate
from prefect_hcs.pipeline.execution import execution_target
from prefect_hcs.pipeline.model import Pipeline, Step
from prefect_hcs.pipeline.physical import (
    output_physical,
    physical_warnings,
    positions_bound,
    site_positions_px,
    stitch_metadata_problem,
)
from prefect_hcs.pipeline.plan import (
    PLATE_TASKS,
    InputPlane,
    OutputPlan,
    PlatePlan,
    StepPlan,
    ZarrSettings,
    fingerprint_of,
)
from prefect_hcs.pipeline.planes import select_planes
from prefect_hcs.pipeline.plate_steps import plan_plate_steps
from prefect_hcs.pipeline.wells import WellFilterError, select_wells
from prefect_hcs.storage.object_store import inherit_output_options

SECRET_KEYS = ("password", "passwd", "secret", "token", "key")
_DIMS = ("timepoint", "channel", "z", "site")


class CompileError(UserFacingError, ValueError):
    """The run cannot be planned as configured. Lists every problem found, each with its fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "the plate run cannot be compiled:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _v(value: Any) -> Any:
    return value.value if isinstance(value, Backend | TaskRunnerKind) else value


def _join(base: str, *parts: str) -> str:
    base = base.rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts if p]])


def _parent_and_name(url: str) -> tuple[str, str]:
    url = url.rstrip("/")
    if "://" in url:
        proto, rest = url.split("://", 1)
        parent, name = posixpath.split(rest)
        return (f"{proto}://{parent}" if parent else f"{proto}://"), name
    parent, name = posixpath.split(url)
    return parent or ".", name


def _normal(url: str) -> str:
    url = url.rstrip("/")
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url:
        url = posixpath.normpath(posixpath.abspath(url))
    return url


def _plate_number(layout: PlateLayout) -> str:
    return layout.plate_id.removeprefix("plate_")


_IDENTITY = {"well", "site", "channel", "z", "timepoint", "path", "projection"}


class _Context:
    """Mutable state of one compilation (collects every problem before raising)."""

    def __init__(self, layout: PlateLayout, pipeline: Pipeline):
        self.layout = layout
        self.pipeline = pipeline
        self.problems: list[str] = []
        self.warnings: list[str] = list(layout.warnings)
        self.stage = stage_positions(layout)  # {(well, site): stage (x, y) µm}, built once

    def error(self, message: str) -> None:
        self.problems.append(message)


def secret_option_problems(storage_options: dict[str, Any] | None) -> list[str]:
    """Storage-option keys that look like secrets (plans and run parameters are not secret)."""
    problems = []
    for key in storage_options or {}:
        if any(s in key.lower() for s in SECRET_KEYS):
            problems.append(
                f"storage option {key!r} looks like a secret; plans are published as artifacts. "
                "Put credentials in a Block (OmeroCredentials; AwsCredentials or "
                "MinIOCredentials for S3) and pass its name (credentials_block=...) instead"
            )
    return problems


def _check_storage_options(ctx: _Context, storage_options: dict[str, Any]) -> None:
    for problem in secret_option_problems(storage_options):
        ctx.error(problem)


def _function_specs(ctx: _Context, step: Step, index: int) -> dict[str | None, list[Any]]:
    from prefect_hcs.processing.registry import (
        InvalidKwargsError,
        UnknownFunctionError,
        get_function,
        validate_kwargs,
    )

    specs: dict[str | None, list[Any]] = {}
    for group, chain in step.chains().items():
        specs[group] = []
        for call in chain:
            where = f"step {index} {step.name!r}"
            try:
                spec = get_function(call.name)
            except UnknownFunctionError as exc:
                ctx.error(f"{where}: {exc}")
                continue
            try:
                validate_kwargs(call.name, dict(call.kwargs))
            except (InvalidKwargsError, ValueError) as exc:
                ctx.error(f"{where}: {exc}")
            specs[group].append(spec)
    return specs


def _step_shapes(
    ctx: _Context,
    step: Step,
    index: int,
    specs: dict[str | None, list[Any]],
    sizes: dict[str, int],
) -> tuple[tuple[str, ...], dict[str, int]]:
    """Validate components and return (variable components, sizes after the step)."""
    where = f"step {index} {step.name!r}"
    first = next((s[0] for s in specs.values() if s), None)
    vc = tuple(step.variable_components or (first.variable_components if first else ("site",)))
    if step.group_by and step.group_by in vc:
        ctx.error(
            f"{where}: group_by {step.group_by!r} is also a variable component; "
            "choose one (the function sees the stacked components, group_by picks the function)"
        )
    if step.group_by and isinstance(step.func, dict):
        valid = _component_values(ctx.layout, step.group_by, sizes)
        unknown = sorted(set(step.func) - set(valid))
        if unknown:
            ctx.error(
                f"{where}: function mapping keys {unknown} are not values of "
                f"{step.group_by!r} on this plate (values: {', '.join(valid)})"
            )
    after: dict[str | None, dict[str, int]] = {}
    for group, chain in specs.items():
        current = dict(sizes)
        for spec in chain:
            placed = "site_positions_px" in spec.metadata_inputs  # stage positions, else grid
            problem = placed and stitch_metadata_problem(ctx.layout, spec.name, current["site"])
            if problem:
                ctx.error(f"{where}: {problem}")
            for meta in () if placed else spec.metadata_inputs:
                if meta == "grid":
                    grid = ctx.layout.grid
                    if grid is None:
                        ctx.error(
                            f"{where}: {spec.name} needs the site grid, which the plate lacks"
                        )
                    elif current["site"] != grid[0] * grid[1]:
                        ctx.error(
                            f"{where}: {spec.name} needs {grid[0]}x{grid[1]} sites per well, "
                            f"but {current['site']} reach this step (already stitched?)"
                        )
                if meta == "overlap" and ctx.layout.tile_overlap is None:
                    ctx.error(f"{where}: {spec.name} needs the tile overlap, which the plate lacks")
            for comp in sorted(spec.reduced_components(vc)):
                if comp not in vc:
                    ctx.error(
                        f"{where}: {spec.name} combines the {comp!r} axis, so {comp!r} must be "
                        f"one of the step's variable_components (got {list(vc)})"
                    )
                current[comp] = 1
        after[group] = current
    shapes = {tuple(sorted(s.items())) for s in after.values()}
    if isinstance(step.func, dict) and step.group_by:
        n_groups = len(_component_values(ctx.layout, step.group_by, sizes))
        if len(step.func) < n_groups:
            shapes.add(tuple(sorted(sizes.items())))  # pass-through groups keep their shape
    if len(shapes) > 1:
        ctx.error(
            f"{where}: the functions of this mapping change the stack's shape differently "
            "(every group, including unmapped pass-through groups, must end with the same shape)"
        )
    return vc, next(iter(after.values())) if after else dict(sizes)


def _stitched_bound(
    kwargs: dict[str, Any], layout: PlateLayout, yx: tuple[int, int]
) -> tuple[int, int]:
    """Upper bound of a stitched canvas: nominal extent plus the maximal stage shifts."""
    if (bound := positions_bound(kwargs, layout, yx)) is not None:
        return bound
    rows, cols = layout.grid or (1, 1)
    overlap = layout.tile_overlap or 0.0
    shift = int(kwargs.get("max_shift", 20))
    out = []
    for n, size in ((rows, yx[0]), (cols, yx[1])):
        step = size - round(size * overlap)
        out.append((n - 1) * step + size + 2 * shift * (n - 1))
    return out[0], out[1]


#: Functions that change the (y, x) size, with an upper bound of their output size.
_YX_BOUNDS = {"stitch_tiles": _stitched_bound}


def _component_values(layout: PlateLayout, comp: str, sizes: dict[str, int]) -> list[str]:
    values = {
        "site": layout.sites,
        "channel": layout.channels,
        "z": layout.z_planes,
        "timepoint": layout.timepoints,
    }[comp]
    return [str(v) for v in values][: sizes[comp]]


def _chunks(wells: tuple[str, ...], n_steps: int, max_task_runs: int, workers: int) -> tuple:
    """Split wells into contiguous chunks (one task runs one step over one chunk).

    Enough chunks to keep every worker busy with some load balancing (4 per worker), about 8
    wells per chunk on big plates so progress stays visible, and never more than the task-run
    budget allows (steps × chunks + 4 plate-level tasks ≤ max_task_runs): each task run costs ~10-60 ms of
    orchestration and the server records task runs asynchronously.
    """
    budget = max(1, (max_task_runs - PLATE_TASKS) // max(1, n_steps))
    wanted = max(4 * workers, math.ceil(len(wells) / 8))
    n = max(1, min(len(wells), budget, wanted))
    size = math.ceil(len(wells) / n)
    n = math.ceil(len(wells) / size)
    return tuple(tuple(wells[i * size : (i + 1) * size]) for i in range(n))


def _config_subset(resolved: ResolvedConfig, prefixes: tuple[str, ...]) -> dict[str, Any]:
    data = resolved.to_json()
    return {k: v for k, v in data.items() if k.startswith(prefixes)}


def _output_root(
    layout: PlateLayout, resolved: ResolvedConfig, section: str
) -> tuple[str, str, str]:
    """(root URL, root backend, reason) from a path-planning-shaped section."""
    gof = resolved.value(f"{section}.global_output_folder")
    suffix = resolved.value(f"{section}.output_dir_suffix")
    if gof:
        root = _join(gof, f"{layout.plate_id}{suffix}")
        backend = "omero" if str(gof).startswith("omero://") else "disk"
        return root, backend, f"{section}.global_output_folder is set"
    if layout.format == "omero":
        return (
            f"omero://plate_{_plate_number(layout)}/outputs",
            "omero",
            "OMERO plate and no global_output_folder: outputs are annotations on the plate",
        )
    parent, name = _parent_and_name(layout.url)
    return _join(parent, f"{name}{suffix}"), "disk", "next to the plate (no global_output_folder)"


def _check_omero_root(
    ctx: _Context, where: str, resolved: ResolvedConfig, section: str, root: str
) -> None:
    """An ``omero://`` output folder must be an outputs area of this very OMERO plate.

    Otherwise the run would only fail when the first file is written (after every well was
    processed, for plate tables), or write to a made-up plate such as the seed's
    ``/omero/plate_403_outputs``.
    """
    from prefect_hcs.storage.omero_paths import SCHEME_HELP, parse

    field = f"{section}.global_output_folder"
    gof = resolved.value(field)
    if not str(gof or "").startswith("omero://"):
        return
    source = resolved.source(field)
    if section != "path_planning_config" and source.path.startswith("path_planning_config."):
        return  # inherited from path_planning_config, which is checked (and reported) once
    src = source.describe()
    if ctx.layout.format != "omero":
        ctx.error(
            f"{where}{field} = {gof!r} ({src}) is in OMERO, but the plate is not an OMERO plate "
            f"({ctx.layout.format}): OMERO outputs are annotations on the OMERO plate they "
            "belong to. Use a filesystem URL"
        )
        return
    try:
        p = parse(root)
    except ValueError as exc:
        ctx.error(f"{where}{field} = {gof!r} ({src}): {exc}")
        return
    number = _plate_number(ctx.layout)
    if p.kind != "outputs" or str(p.plate_id) != number:
        ctx.error(
            f"{where}{field} = {gof!r} ({src}) gives outputs at {root!r}, which is not an "
            f"outputs area of omero://plate_{number} ({SCHEME_HELP}). Leave it unset to attach "
            f"results to the plate, or use omero://plate_{number}/outputs/<folder>"
        )


def _materialized_backend(
    ctx: _Context,
    where: str,
    requested: str,
    mat_root_backend: str,
    has_folder: bool,
    source: str = "",
) -> tuple[str, str]:
    plate_is_omero = ctx.layout.format == "omero"
    via = f" [{source}]" if source else ""
    if requested == "auto":
        if mat_root_backend == "omero":
            return (
                "omero",
                f"auto{via}: OMERO plate without global_output_folder → omero annotations",
            )
        return "disk", f"auto{via}: files on the output filesystem"
    if requested == "omero":
        if not plate_is_omero:
            ctx.error(
                f"{where}: vfs_config.materialization_backend is 'omero' but the plate is a "
                f"{ctx.layout.format} plate, not an OMERO plate; use 'disk', 'zarr' or 'auto'"
            )
        return "omero", f"vfs_config.materialization_backend = omero (explicit){via}"
    if requested == "zarr" and mat_root_backend == "omero":
        ctx.error(
            f"{where}: vfs_config.materialization_backend is 'zarr' for an OMERO plate without "
            "a global_output_folder: Zarr chunks would each become a FileAnnotation, which does "
            "not scale. Set path_planning_config.global_output_folder to a filesystem URL, or "
            "use 'omero'/'auto'"
        )
    if requested == "disk" and mat_root_backend == "omero":
        ctx.error(
            f"{where}: vfs_config.materialization_backend is 'disk' but the output location is "
            "the OMERO plate itself (virtual paths cannot hold files). Set "
            "path_planning_config.global_output_folder to a local/object-storage URL, or use "
            "'omero'/'auto'"
        )
    return requested, f"vfs_config.materialization_backend = {requested} (explicit){via}"


def compile_plate(
    layout: PlateLayout,
    pipeline: Pipeline,
    *,
    global_layer: BaseModel | None = None,
    pipeline_layer: BaseModel | None = None,
    storage_options: dict[str, Any] | None = None,
    output_storage_options: dict[str, Any] | None = None,
) -> PlatePlan:
    """Plan every (well, step) of a plate run, or raise `CompileError` listing every problem.

    `storage_options` are the plate's; `output_storage_options` every output's (None: the
    plate's when the output is on the same kind of store, else none).
    """
    storage_options = dict(storage_options or {})
    pipeline, fitted = fit_to_plate(pipeline, layout)  # the built-in demo plans on any plate
    ctx = _Context(layout, pipeline)
    ctx.warnings.extend(fitted)
    _check_storage_options(ctx, storage_options)
    _check_storage_options(ctx, output_storage_options or {})
    steps = [s for s in pipeline.steps if s.enabled]
    if not steps:
        raise CompileError(["every step of the pipeline is disabled"])

    base = resolve(global_layer, pipeline_layer)
    per_step = [resolve(global_layer, pipeline_layer, s.config) for s in steps]
    found = layout_report(layout)
    layout, notes, problems = select_planes(layout, base, per_step)
    ctx.layout, ctx.warnings, ctx.problems = layout, ctx.warnings + notes, ctx.problems + problems
    ctx.problems += checks.path_setting_problems(base, "", ("path_planning_config",))

    # wells ------------------------------------------------------------------------------------
    try:
        wells = select_wells(
            layout.wells,
            base.value("well_filter_config.well_filter"),
            _v(base.value("well_filter_config.well_filter_mode")),
        )
    except WellFilterError as exc:
        raise CompileError([f"well_filter_config.well_filter: {exc}"]) from None
    if not wells:
        src = base.source("well_filter_config.well_filter").describe()
        ctx.error(
            f"the well selection is empty: well_filter_config.well_filter = "
            f"{base.value('well_filter_config.well_filter')!r} ({src}) matches none of the "
            f"plate's wells ({', '.join(layout.wells[:12])}{'…' if len(layout.wells) > 12 else ''})"
        )

    # execution --------------------------------------------------------------------------------
    runner = _v(base.value("execution_config.task_runner"))
    workers = int(base.value("num_workers"))
    target = execution_target(base, runner)
    for problem in target.problems:
        ctx.error(problem)

    # outputs ----------------------------------------------------------------------------------
    for field in ("path_planning_config.global_output_folder",):
        value = str(base.value(field) or "")
        if ".." in value.replace("\\", "/").split("/"):
            ctx.error(
                f"{field} = {value!r} ({base.source(field).describe()}) contains '..'; give a "
                "path without parent steps so outputs cannot escape the folder meant for them"
            )
    root, root_backend, root_reason = _output_root(layout, base, "path_planning_config")
    _check_omero_root(ctx, "", base, "path_planning_config", root)
    if root_backend == "disk":
        plate_norm, root_norm = _normal(layout.url), _normal(root)
        if root_norm == plate_norm or root_norm.startswith(plate_norm + "/"):
            ctx.error(
                f"the output location {root} is the input plate (or inside it): set "
                "path_planning_config.output_dir_suffix to a non-empty suffix or "
                "global_output_folder to another folder"
            )
    if output_storage_options is None:
        output_storage_options = inherit_output_options(layout.url, root, storage_options)
    image_backend = "zarr" if root_backend == "disk" else "omero"
    zarr_url = _join(root, f"{layout.plate_id}.ome.zarr") if image_backend == "zarr" else None

    # intermediates ----------------------------------------------------------------------------
    requested_inter = _v(base.value("vfs_config.intermediate_backend"))
    if requested_inter == "auto":
        in_memory = runner == "threads"
    elif requested_inter == "memory":
        in_memory = True
        if runner != "threads":
            ctx.error(
                "vfs_config.intermediate_backend is 'memory' but execution_config.task_runner is "
                f"{runner!r}: tasks may run in separate processes and would not see each other's "
                "memory. Use 'auto' or 'disk'"
            )
    elif requested_inter == "disk":
        in_memory = False
    else:
        in_memory = False
        ctx.error(
            f"vfs_config.intermediate_backend {requested_inter!r} is not supported for "
            "intermediates; use auto, memory or disk"
        )
    if not in_memory and root_backend == "omero":
        ctx.error(
            "intermediates cannot go through OMERO annotations (one per well and step); set "
            "path_planning_config.global_output_folder, or use the threads task runner"
        )
    inter_backend = "memory" if in_memory else "disk"
    source_fp = fingerprint_of(
        {
            "plate": layout.plate_id,
            "url": layout.url,
            # the plane index only: metadata read from headers must not change which plate it is
            "images": [r.model_dump(include=_IDENTITY) for r in layout.images],
        }
    )
    inter_root = (
        f"memory://prefect-hcs/{source_fp[:16]}" if in_memory else _join(root, ".intermediate")
    )

    # steps ------------------------------------------------------------------------------------
    source_backend = "omero" if layout.format == "omero" else "disk"
    sizes0 = {
        "timepoint": len(layout.timepoints),
        "channel": len(layout.channels),
        "z": len(layout.z_planes),
        "site": len(layout.sites),
    }
    sizes = dict(sizes0)
    yx: tuple[int, int] = tuple(layout.image_shape)  # type: ignore[assignment]
    metadata = {
        "grid": list(layout.grid) if layout.grid else None,
        "overlap": layout.tile_overlap,
        "pixel_size_um": layout.pixel_size_um,
        "channel_names": {str(k): v for k, v in layout.channel_names.items()},
        "plane_shape": list(layout.image_shape),  # every plane's header is checked against it
    }
    step_info: list[dict[str, Any]] = []
    for i, (step, resolved) in enumerate(zip(steps, per_step, strict=True)):
        where = f"step {i} {step.name!r}"
        specs = _function_specs(ctx, step, i)
        if step.input_source == "pipeline_start":
            sizes = dict(sizes0)
            yx = tuple(layout.image_shape)  # type: ignore[assignment]
        vc, sizes_after = _step_shapes(ctx, step, i, specs, sizes)
        shape_before = {"fields": sizes["site"], "yx": yx}  # what the output plate declares
        reads_source = i == 0 or step.input_source == "pipeline_start"
        requested_read = _v(resolved.value("vfs_config.read_backend"))
        if reads_source:
            if requested_read not in ("auto", source_backend):
                ctx.error(
                    f"{where}: vfs_config.read_backend is {requested_read!r} but this "
                    f"{layout.format} plate can only be read with {source_backend!r} (or 'auto')"
                )
            read_backend = source_backend
            read_reason = f"reads the {layout.format} plate ({'auto' if requested_read == 'auto' else 'explicit'})"
        else:
            read_backend = inter_backend
            read_reason = f"reads step {i - 1}'s intermediate ({inter_backend})"
        mat_enabled = bool(resolved.value("step_materialization_config.enabled"))
        mat_root, mat_root_backend, _ = _output_root(
            layout, resolved, "step_materialization_config"
        )
        if mat_enabled:
            _check_omero_root(ctx, f"{where}: ", resolved, "step_materialization_config", mat_root)
            ctx.problems += checks.path_setting_problems(
                resolved, f"{where}: ", ("step_materialization_config",)
            )
        requested_mat = _v(resolved.value("vfs_config.materialization_backend"))
        has_folder = bool(resolved.value("step_materialization_config.global_output_folder"))
        mat_backend, mat_reason = _materialized_backend(
            ctx,
            where,
            requested_mat,
            mat_root_backend,
            has_folder,
            resolved.source("vfs_config.materialization_backend").describe(),
        )
        if mat_backend == "omero" and mat_root_backend != "omero":
            mat_root = f"omero://plate_{_plate_number(layout)}/outputs"
        try:
            mat_wells = set(
                select_wells(
                    wells,
                    resolved.value("step_materialization_config.well_filter"),
                    _v(resolved.value("step_materialization_config.well_filter_mode")),
                )
            )
            step_wells = set(
                select_wells(
                    wells,
                    resolved.value("step_well_filter_config.well_filter"),
                    _v(resolved.value("step_well_filter_config.well_filter_mode")),
                )
            )
        except WellFilterError as exc:
            ctx.error(f"{where}: {exc}")
            mat_wells, step_wells = set(), set(wells)
        special = sorted({o for chain in specs.values() for s in chain for o in s.special_outputs})
        ctx.problems += checks.table_name_problems(where, special)
        if mat_enabled and mat_backend == "memory" and mat_root_backend == "omero":
            ctx.error(
                f"{where}: vfs_config.materialization_backend is 'memory' with checkpoints "
                "enabled, but this OMERO plate has no global_output_folder, so checkpoints would "
                "go to the OMERO plate itself, which cannot hold memory (.npy) checkpoints. Use "
                "'omero'/'auto', or set path_planning_config.global_output_folder"
            )
        step_info.append(
            dict(
                step=step,
                resolved=resolved,
                vc=vc,
                reads_source=reads_source,
                read_backend=read_backend,
                read_reason=read_reason,
                mat_enabled=mat_enabled,
                mat_root=mat_root,
                mat_backend=mat_backend,
                mat_reason=mat_reason,
                mat_sub=resolved.value("step_materialization_config.sub_dir"),
                mat_wells=mat_wells,
                step_wells=step_wells,
                special=special,
                positions=any(
                    "site_positions_px" in s.metadata_inputs for c in specs.values() for s in c
                ),
            )
        )
        sizes = sizes_after
        for chain in step.chains().values():
            for call in chain:
                if call.name in _YX_BOUNDS:
                    yx = _YX_BOUNDS[call.name](dict(call.kwargs), layout, yx)
        if problem := checks.partial_reshape_problem(
            where, shape_before, {"fields": sizes["site"], "yx": yx}, step_wells, wells
        ):
            ctx.error(problem)

    # a step whose output nobody reads is a disconnected pipeline
    for i in range(len(steps) - 1):
        nxt = steps[i + 1]
        info = step_info[i]
        if nxt.input_source == "pipeline_start" and not info["mat_enabled"] and not info["special"]:
            ctx.error(
                f"step {i} {steps[i].name!r}: its output is never used (step {i + 1} "
                f"{nxt.name!r} reads from the pipeline start). Enable "
                "step_materialization_config for it, or remove it"
            )

    ctx.problems += checks.size_problems(
        plane_yx=tuple(layout.image_shape),
        dtype=layout.dtype,
        stack=sizes0,
        canvas=(sizes["site"], yx),
        max_plane_pixels=int(base.value("limits_config.max_plane_pixels")),
        max_well_gib=float(base.value("limits_config.max_well_gib")),
        source=(
            base.source("limits_config.max_plane_pixels").describe(),
            base.source("limits_config.max_well_gib").describe(),
        ),
    )
    if ctx.problems:
        raise CompileError(ctx.problems)

    ctx.warnings.extend(physical_warnings(layout, any(i["reads_source"] for i in step_info)))
    table_urls: dict[str, str] = {}
    for info in step_info:
        for name in info["special"]:
            table_urls[f"{info['step'].name}.{name}"] = _join(
                root, f"{info['step'].name}_{name}.csv"
            )
    output = OutputPlan(
        root=root,
        root_backend=root_backend,
        image_backend=image_backend,
        zarr_url=zarr_url,
        storage_options=dict(output_storage_options),
        tables=table_urls,
        fields_per_well=sizes["site"],
        field_shape=yx,
        pixel_size_um=layout.pixel_size_um,
        **output_physical(layout, wells, sizes, ctx.stage),
        done_dirs={
            w: (
                f"omero://plate_{_plate_number(layout)}/{w}/outputs/.hcs-done"
                if root_backend == "omero"
                else _join(root, ".hcs-done")
            )
            for w in wells
        },
        zarr=ZarrSettings(
            compressor=base.value("zarr_config.compressor"),
            compression_level=base.value("zarr_config.compression_level"),
            chunk_size=base.value("zarr_config.chunk_size"),
        ),
        source_fingerprint=source_fp,
    )

    plans: list[StepPlan] = []
    by_well: dict[str, list[Any]] = {}
    for ref in layout.images:
        by_well.setdefault(ref.well, []).append(ref)
    for info in step_info:
        info["config"] = _config_subset(
            info["resolved"],
            ("vfs_config", "step_materialization_config", "step_well_filter_config")
            + (("zarr_config",) if info is step_info[-1] else ()),
        )
    for well in wells:
        planes = tuple(
            InputPlane(
                site=r.site,
                channel=r.channel,
                z=r.z,
                timepoint=r.timepoint,
                url=r.path if "://" in r.path else _source_url(layout, r.path),
            )
            for r in by_well.get(well, ())
        )
        for i, info in enumerate(step_info):
            step: Step = info["step"]
            last = i == len(steps) - 1
            if last:
                write_backend = image_backend
                if image_backend == "zarr":
                    out_dir = _join(zarr_url or "", WellId.parse(well).ngff_path)
                    out_url = out_dir
                else:
                    out_dir = f"omero://plate_{_plate_number(layout)}/{well}/outputs/images"
                    out_url = _join(out_dir, f"{well}.tif")
                write_reason = f"final output: {image_backend} ({root_reason})"
            else:
                write_backend = inter_backend
                out_dir = _join(inter_root, well)
                out_url = _join(out_dir, f"{i:02d}_{step.name}.npy")
                write_reason = (
                    "intermediate in memory: tasks share one process (threads)"
                    if in_memory
                    else f"intermediate on disk: task runner {runner!r} may use other processes"
                )
            mat_dir = mat_url = None
            if info["mat_enabled"] and well in info["mat_wells"]:
                if info["mat_backend"] == "omero":
                    mat_dir = (
                        f"omero://plate_{_plate_number(layout)}/{well}/outputs/"
                        f"{info['mat_sub']}/{step.name}"
                    )
                    mat_url = _join(mat_dir, f"{well}.tif")
                elif info["mat_backend"] == "zarr":
                    mat_dir = _join(info["mat_root"], info["mat_sub"], f"{step.name}.zarr")
                    mat_url = _join(mat_dir, well)
                else:
                    mat_dir = _join(info["mat_root"], info["mat_sub"], step.name)
                    mat_url = _join(
                        mat_dir, f"{well}.{'npy' if info['mat_backend'] == 'memory' else 'tif'}"
                    )
            special_urls = {}
            for name in info["special"]:
                if root_backend == "omero":
                    special_urls[name] = (
                        f"omero://plate_{_plate_number(layout)}/{well}/outputs/tables/"
                        f"{step.name}_{name}.csv"
                    )
                else:
                    special_urls[name] = _join(root, "tables", step.name, f"{well}_{name}.csv")
            prev_out = None if info["reads_source"] else plans[-1].output_url
            plan = StepPlan(
                plate_id=layout.plate_id,
                well=well,
                step_index=i,
                step_name=step.name,
                function=step.func,
                variable_components=info["vc"],
                group_by=step.group_by,
                input_source=step.input_source,
                applies=well in info["step_wells"],
                metadata=(
                    {**metadata, "site_positions_px": site_positions_px(layout, well, ctx.stage)}
                    if info["positions"]
                    else metadata
                ),
                read_backend=info["read_backend"],
                read_from=prev_out,
                source_planes=planes if info["reads_source"] else (),
                write_backend=write_backend,
                output_dir=out_dir,
                output_url=out_url,
                materialized_backend=info["mat_backend"],
                materialized_output_dir=mat_dir,
                materialized_url=mat_url,
                special_outputs=special_urls,
                is_last=last,
                config=info["config"],
                code_versions=code_versions(step),
                backend_reasons={
                    "read_backend": info["read_reason"],
                    "write_backend": write_reason,
                    "materialized_backend": info["mat_reason"],
                },
            ).with_fingerprint()
            chain = fingerprint_of([plans[-1].chain_fingerprint if i else "", plan.fingerprint])
            plans.append(plan.model_copy(update={"chain_fingerprint": chain}))

    if problems := checks.write_containment_problems(
        _writes(plans, table_urls, root, inter_root, step_info)
    ):
        raise CompileError(problems)
    plans, plate_steps = plan_plate_steps(plans, root)
    chunks = _chunks(wells, len(steps), int(base.value("execution_config.max_task_runs")), workers)
    plate_plan = PlatePlan(
        plate_id=layout.plate_id,
        plate_url=layout.url,
        plate_format=layout.format,
        storage_options=storage_options,
        pipeline_name=pipeline.name,
        pipeline=pipeline.to_data(),
        wells=wells,
        steps=tuple(s.name for s in steps),
        chunks=chunks,
        intermediates_in_memory=in_memory,
        task_runner=runner,
        dask_address=target.dask_address,
        slurm_cluster=target.slurm_cluster,
        num_workers=workers,
        retries=int(base.value("execution_config.retries")),
        retry_delay_seconds=float(base.value("execution_config.retry_delay_seconds")),
        output=output,
        resolved_config={s.name: r.to_json() for s, r in zip(steps, per_step, strict=True)},
        step_plans=tuple(plans),
        plate_steps=plate_steps,
        warnings=tuple(ctx.warnings),
        layout=found,
    )
    content = plate_plan.model_dump(mode="json", exclude={"fingerprint", "step_plans"})
    content["step_fingerprints"] = [p.fingerprint for p in plans]
    return plate_plan.model_copy(update={"fingerprint": fingerprint_of(content)})


def code_versions(step: Any) -> dict[str, str]:
    """{function name: code version} of every function a step runs (see FunctionSpec)."""
    from prefect_hcs.processing.registry import get_function

    return {n: get_function(n).code_version() for n in sorted(set(step.function_names()))}


def _source_url(layout: PlateLayout, path: str) -> str:
    """Full URL of a plane path found by a handler (handlers return protocol-less paths)."""
    if "://" in layout.url:
        proto = layout.url.split("://", 1)[0]
        return f"{proto}://{path.lstrip('/')}" if proto != "file" else path
    return path


def _writes(
    plans: list[StepPlan],
    tables: dict[str, str],
    root: str,
    inter_root: str,
    step_info: list[dict[str, Any]],
) -> list[tuple[str, str, str]]:
    """(what, URL, root it must stay in) for everything a run writes."""
    out = [(f"plate table {name}", url, root) for name, url in tables.items()]
    for p in plans:
        what = f"step {p.step_name!r} of well {p.well}"
        if p.write_backend == "omero" or p.output_url.startswith("omero://"):
            base = p.output_url.split("/", 3)[:3]
            out.append((f"output of {what}", p.output_url, "/".join(base)))
        else:
            out.append((f"output of {what}", p.output_url, root if p.is_last else inter_root))
        if p.materialized_url:
            mat_root = step_info[p.step_index]["mat_root"]
            if p.materialized_url.startswith("omero://"):
                mat_root = "/".join(p.materialized_url.split("/", 3)[:3])
            out.append((f"checkpoint of {what}", p.materialized_url, mat_root))
        for name, url in p.special_outputs.items():
            base = "/".join(url.split("/", 3)[:3]) if url.startswith("omero://") else root
            out.append((f"table {name} of {what}", url, base))
    return out
