"""Phase 4 of the compiler, choose backends: where outputs, intermediates and checkpoints go.

Decides the output root (and whether it is a filesystem or the OMERO plate), the final image
backend (OME-Zarr or OMERO annotations), where intermediates live (memory when all the steps of
a well run in one process, else disk), and each step's read and checkpoint backends, each with
the reason the plan records.
A backend the plate cannot take is a problem naming the field, its layer and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect_hcs.config.enums import Backend, TaskRunnerKind
from prefect_hcs.config.resolver import ResolvedConfig
from prefect_hcs.formats.fsio import join_url
from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.pipeline import checks
from prefect_hcs.pipeline.execution import (
    LOCAL_RUNNERS,
    ExecutionTarget,
    choose_runner,
    execution_target,
)
from prefect_hcs.pipeline.model import Step
from prefect_hcs.pipeline.resolution import Resolution
from prefect_hcs.pipeline.shapes import PipelineCheck
from prefect_hcs.pipeline.urls import normal_url, omero_plate_url, parent_and_name

__all__ = ["Backends", "StepBackends", "choose_backends", "output_root"]


def plain(value: Any) -> Any:
    """An enum's value (for messages and plan fields that stay plain strings), else `value`."""
    return value.value if isinstance(value, Backend | TaskRunnerKind) else value


@dataclass(frozen=True)
class StepBackends:
    """One step's backends, each with why, and where its checkpoints go."""

    read: Backend
    read_reason: str
    write: Backend
    write_reason: str
    materialized: Backend
    materialized_reason: str
    checkpoints: bool
    checkpoint_root: str
    checkpoint_sub_dir: str


@dataclass(frozen=True)
class Backends:
    """Where the run executes and writes."""

    runner: str
    workers: int
    target: ExecutionTarget
    root: str
    root_backend: Backend
    image_backend: Backend
    zarr_url: str | None
    in_memory: bool
    intermediate_root: str
    steps: tuple[StepBackends, ...]
    problems: tuple[str, ...]


def choose_backends(res: Resolution, steps: tuple[Step, ...], checked: PipelineCheck) -> Backends:
    """Phase 4: every backend of the run, with its reason; what cannot work is a problem."""
    layout, base = res.layout, res.base
    problems: list[str] = []
    root, root_backend, root_reason = output_root(layout, base, "path_planning_config")
    problems += _root_problems(layout, base, root, root_backend)
    in_process = _in_flow_process(layout, root, root_backend)
    functions = function_refs(steps)
    runner, _, _ = choose_runner(base, in_process, functions, memory_checkpoints=False)
    in_memory, why_not = intermediates_in_memory(base, runner, root_backend)
    problems += why_not
    inter = Backend.MEMORY if in_memory else Backend.DISK
    image = Backend.ZARR if root_backend == Backend.DISK else Backend.OMERO
    inter_reason = (
        "intermediate in memory: a well's steps run in one process"
        if in_memory
        else f"intermediate on disk: task runner {runner!r} may use other processes"
    )
    chosen = []
    for i, (step, resolved) in enumerate(zip(steps, res.per_step, strict=True)):
        where = f"step {i} {step.name!r}"
        last = i == len(steps) - 1
        if checked.steps[i].reads_source:
            read, read_reason = _source_read(layout, resolved, where, problems)
        else:
            read, read_reason = inter, f"reads step {i - 1}'s intermediate ({inter})"
        chosen.append(
            StepBackends(
                read=read,
                read_reason=read_reason,
                write=image if last else inter,
                write_reason=f"final output: {image} ({root_reason})" if last else inter_reason,
                **_checkpoints(layout, resolved, where, problems),
            )
        )
    memory_checkpoints = any(c.checkpoints and c.materialized == Backend.MEMORY for c in chosen)
    runner, _, runner_problems = choose_runner(base, in_process, functions, memory_checkpoints)
    target = execution_target(base, runner)
    problems += runner_problems + target.problems
    return Backends(
        runner=runner,
        workers=int(base.value("num_workers")),
        target=target,
        root=root,
        root_backend=root_backend,
        image_backend=image,
        zarr_url=join_url(root, f"{layout.plate_id}.ome.zarr") if image == Backend.ZARR else None,
        in_memory=in_memory,
        intermediate_root=(
            f"memory://prefect-hcs/{res.source_fingerprint[:16]}"
            if in_memory
            else join_url(root, ".intermediate")
        ),
        steps=tuple(chosen),
        problems=tuple(problems),
    )


def _in_flow_process(layout: PlateLayout, root: str, root_backend: Backend) -> str:
    """Why the plate or the output exists only in the flow's process ("" if it does not)."""
    if root_backend == Backend.OMERO or layout.format == "omero":
        return "the plate or the output is on OMERO, whose connection lives in the flow's process"
    for what, url in (("plate", layout.url), ("output", root)):
        if str(url).startswith("memory://"):
            return f"the {what} is in memory:// ({url}), which only the flow's process sees"
    return ""


def function_refs(steps: tuple[Step, ...]) -> dict[str, str]:
    """{function name: "module:qualname"} of every registered function the steps call."""
    from prefect_hcs.processing.registry import get_function

    refs = {}
    for step in steps:
        for name in step.function_names():
            try:
                func = get_function(name).func
            except Exception:  # noqa: BLE001 - an unknown name is reported by the checks phase
                continue
            refs[name] = f"{func.__module__}:{func.__qualname__}"
    return refs


def output_root(
    layout: PlateLayout, resolved: ResolvedConfig, section: str
) -> tuple[str, Backend, str]:
    """(root URL, root backend, reason) from a path-planning-shaped config section."""
    gof = resolved.value(f"{section}.global_output_folder")
    suffix = resolved.value(f"{section}.output_dir_suffix")
    if gof:
        root = join_url(gof, f"{layout.plate_id}{suffix}")
        backend = Backend.OMERO if str(gof).startswith("omero://") else Backend.DISK
        return root, backend, f"{section}.global_output_folder is set"
    if layout.format == "omero":
        return (
            f"{omero_plate_url(layout)}/outputs",
            Backend.OMERO,
            "OMERO plate and no global_output_folder: outputs are annotations on the plate",
        )
    parent, name = parent_and_name(layout.url)
    root = join_url(parent, f"{name}{suffix}")
    return root, Backend.DISK, "next to the plate (no global_output_folder)"


def _root_problems(
    layout: PlateLayout, base: ResolvedConfig, root: str, root_backend: Backend
) -> list[str]:
    """The output root must not climb out ('..'), nor be the plate, nor a foreign OMERO area."""
    problems = []
    field = "path_planning_config.global_output_folder"
    value = str(base.value(field) or "")
    if ".." in value.replace("\\", "/").split("/"):
        problems.append(
            f"{field} = {value!r} ({base.source(field).describe()}) contains '..'; give a "
            "path without parent steps so outputs cannot escape the folder meant for them"
        )
    problems += omero_root_problems(layout, "", base, "path_planning_config", root)
    if root_backend == Backend.DISK:
        plate_norm, root_norm = normal_url(layout.url), normal_url(root)
        if root_norm == plate_norm or root_norm.startswith(plate_norm + "/"):
            problems.append(
                f"the output location {root} is the input plate (or inside it): set "
                "path_planning_config.output_dir_suffix to a non-empty suffix or "
                "global_output_folder to another folder"
            )
    return problems


def omero_root_problems(
    layout: PlateLayout, where: str, resolved: ResolvedConfig, section: str, root: str
) -> list[str]:
    """An ``omero://`` output folder must be an outputs area of this very OMERO plate.

    Otherwise the run would only fail when the first file is written (after every well was
    processed, for plate tables), or write to a made-up plate such as the seed's
    ``/omero/plate_403_outputs``.
    """
    from prefect_hcs.storage.omero_paths import SCHEME_HELP, parse

    field = f"{section}.global_output_folder"
    gof = resolved.value(field)
    if not str(gof or "").startswith("omero://"):
        return []
    source = resolved.source(field)
    if section != "path_planning_config" and source.path.startswith("path_planning_config."):
        return []  # inherited from path_planning_config, which is checked (and reported) once
    src = source.describe()
    if layout.format != "omero":
        return [
            f"{where}{field} = {gof!r} ({src}) is in OMERO, but the plate is not an OMERO plate "
            f"({layout.format}): OMERO outputs are annotations on the OMERO plate they "
            "belong to. Use a filesystem URL"
        ]
    try:
        p = parse(root)
    except ValueError as exc:
        return [f"{where}{field} = {gof!r} ({src}): {exc}"]
    number = layout.plate_id.removeprefix("plate_")
    if p.kind != "outputs" or str(p.plate_id) != number:
        return [
            f"{where}{field} = {gof!r} ({src}) gives outputs at {root!r}, which is not an "
            f"outputs area of omero://plate_{number} ({SCHEME_HELP}). Leave it unset to attach "
            f"results to the plate, or use omero://plate_{number}/outputs/<folder>"
        ]
    return []


def intermediates_in_memory(
    base: ResolvedConfig, runner: str, root_backend: Backend
) -> tuple[bool, list[str]]:
    """(whether intermediates stay in memory, problems) from `vfs_config.intermediate_backend`."""
    requested = plain(base.value("vfs_config.intermediate_backend"))
    problems = []
    local = runner in LOCAL_RUNNERS  # a well's steps all run in one process
    in_memory = requested == "memory" or (requested == "auto" and local)
    if requested == "memory" and not local:
        problems.append(
            "vfs_config.intermediate_backend is 'memory' but execution_config.task_runner is "
            f"{runner!r}: tasks may run in separate processes and would not see each other's "
            "memory. Use 'auto' or 'disk'"
        )
    elif requested not in ("auto", "memory", "disk"):
        problems.append(
            f"vfs_config.intermediate_backend {requested!r} is not supported for "
            "intermediates; use auto, memory or disk"
        )
    if not in_memory and root_backend == Backend.OMERO:
        problems.append(
            "intermediates cannot go through OMERO annotations (one per well and step); set "
            "path_planning_config.global_output_folder, or use the threads task runner"
        )
    return in_memory, problems


def _source_backend(layout: PlateLayout) -> Backend:
    return Backend.OMERO if layout.format == "omero" else Backend.DISK


def _source_read(
    layout: PlateLayout, resolved: ResolvedConfig, where: str, problems: list[str]
) -> tuple[Backend, str]:
    """A step that reads the plate reads it with the plate's own backend."""
    source = _source_backend(layout)
    requested = plain(resolved.value("vfs_config.read_backend"))
    if requested not in ("auto", source):
        problems.append(
            f"{where}: vfs_config.read_backend is {requested!r} but this {layout.format} plate "
            f"can only be read with {source.value!r} (or 'auto')"
        )
    how = "auto" if requested == "auto" else "explicit"
    return source, f"reads the {layout.format} plate ({how})"


def _checkpoints(
    layout: PlateLayout, resolved: ResolvedConfig, where: str, problems: list[str]
) -> dict[str, Any]:
    """A step's checkpoint settings: materialized backend (with why), on/off, root, sub_dir."""
    enabled = bool(resolved.value("step_materialization_config.enabled"))
    root, root_backend, _ = output_root(layout, resolved, "step_materialization_config")
    if enabled:
        problems += omero_root_problems(
            layout, f"{where}: ", resolved, "step_materialization_config", root
        )
        problems += checks.path_setting_problems(
            resolved, f"{where}: ", ("step_materialization_config",)
        )
    field = "vfs_config.materialization_backend"
    requested = plain(resolved.value(field))
    backend, reason = materialized_backend(
        layout, where, requested, root_backend, resolved.source(field).describe(), problems
    )
    if backend == Backend.OMERO and root_backend != Backend.OMERO:
        root = f"{omero_plate_url(layout)}/outputs"
    if enabled and backend == Backend.MEMORY and root_backend == Backend.OMERO:
        problems.append(
            f"{where}: vfs_config.materialization_backend is 'memory' with checkpoints "
            "enabled, but this OMERO plate has no global_output_folder, so checkpoints would "
            "go to the OMERO plate itself, which cannot hold memory (.npy) checkpoints. Use "
            "'omero'/'auto', or set path_planning_config.global_output_folder"
        )
    return {
        "materialized": backend,
        "materialized_reason": reason,
        "checkpoints": enabled,
        "checkpoint_root": root,
        "checkpoint_sub_dir": resolved.value("step_materialization_config.sub_dir"),
    }


def materialized_backend(
    layout: PlateLayout,
    where: str,
    requested: str,
    root_backend: Backend,
    source: str,
    problems: list[str],
) -> tuple[Backend, str]:
    """The checkpoint backend for `requested` (auto: the output root's), and why."""
    via = f" [{source}]" if source else ""
    if requested == "auto":
        if root_backend == Backend.OMERO:
            why = f"auto{via}: OMERO plate without global_output_folder → omero annotations"
            return Backend.OMERO, why
        return Backend.DISK, f"auto{via}: files on the output filesystem"
    if requested == "omero":
        if layout.format != "omero":
            problems.append(
                f"{where}: vfs_config.materialization_backend is 'omero' but the plate is a "
                f"{layout.format} plate, not an OMERO plate; use 'disk', 'zarr' or 'auto'"
            )
        return Backend.OMERO, f"vfs_config.materialization_backend = omero (explicit){via}"
    if requested == "zarr" and root_backend == Backend.OMERO:
        problems.append(
            f"{where}: vfs_config.materialization_backend is 'zarr' for an OMERO plate without "
            "a global_output_folder: Zarr chunks would each become a FileAnnotation, which does "
            "not scale. Set path_planning_config.global_output_folder to a filesystem URL, or "
            "use 'omero'/'auto'"
        )
    if requested == "disk" and root_backend == Backend.OMERO:
        problems.append(
            f"{where}: vfs_config.materialization_backend is 'disk' but the output location is "
            "the OMERO plate itself (virtual paths cannot hold files). Set "
            "path_planning_config.global_output_folder to a local/object-storage URL, or use "
            "'omero'/'auto'"
        )
    return Backend(requested), f"vfs_config.materialization_backend = {requested} (explicit){via}"
