"""Phase 3 of the compiler, check the pipeline: functions, kwargs, components and stack shapes.

Walks the steps once, in order, tracking the size of every axis and the (y, x) of a field, and
reports each function that is unknown, called with bad kwargs, needs metadata the plate lacks, or
combines an axis the step does not stack; mappings whose groups end in different shapes; steps whose
output nobody reads; wells or planes over the configured limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.pipeline import checks
from prefect_hcs.pipeline.model import Step
from prefect_hcs.pipeline.physical import (
    physical_warnings,
    positions_bound,
    stitch_metadata_problem,
)
from prefect_hcs.pipeline.resolution import Resolution

__all__ = ["PipelineCheck", "StepCheck", "check_pipeline", "code_versions"]

Sizes = dict[str, int]


@dataclass(frozen=True)
class StepCheck:
    """What the compiler learnt about one step."""

    variable_components: tuple[str, ...]
    reads_source: bool = True
    special_outputs: tuple[str, ...] = ()
    uses_positions: bool = False
    code_versions: dict[str, str] | None = None


@dataclass(frozen=True)
class PipelineCheck:
    """Per-step findings, the final stack (sizes, field y/x), warnings and problems found."""

    steps: tuple[StepCheck, ...]
    sizes: Sizes
    field_shape: tuple[int, int]
    warnings: tuple[str, ...]
    problems: tuple[str, ...]


def check_pipeline(res: Resolution, steps: tuple[Step, ...]) -> PipelineCheck:
    """Phase 3: check every step against the plate and the steps before it."""
    layout = res.layout
    sizes0 = source_sizes(layout)
    sizes, yx = dict(sizes0), _yx(layout)
    problems: list[str] = []
    found: list[StepCheck] = []
    versions: dict[str, str] = {}
    for i, step in enumerate(steps):
        where = f"step {i} {step.name!r}"
        known = len(problems)
        specs = function_specs(step, where, problems)
        broken = len(problems) > known  # an unknown function has no code version
        if step.input_source == "pipeline_start":
            sizes, yx = dict(sizes0), _yx(layout)
        vc, after = step_shape(layout, step, where, specs, sizes, problems)
        special = sorted({o for chain in specs.values() for s in chain for o in s.special_outputs})
        problems += checks.table_name_problems(where, special)
        before = {"fields": sizes["site"], "yx": yx}  # what the output plate declares
        sizes, yx = after, _yx_after(step, layout, yx)
        wells = res.step_wells[i].runs
        after_shape = {"fields": sizes["site"], "yx": yx}
        if problem := checks.partial_reshape_problem(where, before, after_shape, wells, res.wells):
            problems.append(problem)
        found.append(
            StepCheck(
                variable_components=vc,
                reads_source=i == 0 or step.input_source == "pipeline_start",
                special_outputs=tuple(special),
                uses_positions=any(
                    "site_positions_px" in s.metadata_inputs for c in specs.values() for s in c
                ),
                code_versions=None if broken else code_versions(step, versions),
            )
        )
    problems += disconnected_steps(steps, found, res)
    problems += checks.size_problems(
        plane_yx=layout.image_shape,
        dtype=layout.dtype,
        stack=sizes0,
        canvas=(sizes["site"], yx),
        max_plane_pixels=int(res.base.value("limits_config.max_plane_pixels")),
        max_well_gib=float(res.base.value("limits_config.max_well_gib")),
        source=(
            res.base.source("limits_config.max_plane_pixels").describe(),
            res.base.source("limits_config.max_well_gib").describe(),
        ),
    )
    warnings = physical_warnings(layout, any(c.reads_source for c in found))
    return PipelineCheck(tuple(found), sizes, yx, tuple(warnings), tuple(problems))


def source_sizes(layout: PlateLayout) -> Sizes:
    """Size of every axis of a well's source stack."""
    return {
        "timepoint": len(layout.timepoints),
        "channel": len(layout.channels),
        "z": len(layout.z_planes),
        "site": len(layout.sites),
    }


def _yx(layout: PlateLayout) -> tuple[int, int]:
    return (int(layout.image_shape[0]), int(layout.image_shape[1]))


def function_specs(step: Step, where: str, problems: list[str]) -> dict[str | None, list[Any]]:
    """{group: the registry's specs of its chain}; unknown functions and bad kwargs are problems."""
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
            try:
                spec = get_function(call.name)
            except UnknownFunctionError as exc:
                problems.append(f"{where}: {exc}")
                continue
            try:
                validate_kwargs(call.name, dict(call.kwargs))
            except (InvalidKwargsError, ValueError) as exc:
                problems.append(f"{where}: {exc}")
            specs[group].append(spec)
    return specs


def step_shape(
    layout: PlateLayout,
    step: Step,
    where: str,
    specs: dict[str | None, list[Any]],
    sizes: Sizes,
    problems: list[str],
) -> tuple[tuple[str, ...], Sizes]:
    """(variable components, axis sizes after the step); inconsistencies are problems."""
    first = next((s[0] for s in specs.values() if s), None)
    vc = tuple(step.variable_components or (first.variable_components if first else ("site",)))
    problems += _grouping_problems(layout, step, where, vc, sizes)
    after: dict[str | None, Sizes] = {}
    for group, chain in specs.items():
        current = dict(sizes)
        for spec in chain:
            problems += _metadata_problems(layout, spec, where, current["site"])
            for comp in sorted(spec.reduced_components(vc)):
                if comp not in vc:
                    problems.append(
                        f"{where}: {spec.name} combines the {comp!r} axis, so {comp!r} must be "
                        f"one of the step's variable_components (got {list(vc)})"
                    )
                current[comp] = 1
        after[group] = current
    shapes = {tuple(sorted(s.items())) for s in after.values()}
    if (
        isinstance(step.func, dict)
        and step.group_by
        and len(step.func) < len(component_values(layout, step.group_by, sizes))
    ):
        shapes.add(tuple(sorted(sizes.items())))  # pass-through groups keep their shape
    if len(shapes) > 1:
        problems.append(
            f"{where}: the functions of this mapping change the stack's shape differently "
            "(every group, including unmapped pass-through groups, must end with the same shape)"
        )
    return vc, next(iter(after.values())) if after else dict(sizes)


def _grouping_problems(
    layout: PlateLayout, step: Step, where: str, vc: tuple[str, ...], sizes: Sizes
) -> list[str]:
    problems = []
    if step.group_by and step.group_by in vc:
        problems.append(
            f"{where}: group_by {step.group_by!r} is also a variable component; "
            "choose one (the function sees the stacked components, group_by picks the function)"
        )
    if step.group_by and isinstance(step.func, dict):
        valid = component_values(layout, step.group_by, sizes)
        unknown = sorted(set(step.func) - set(valid))
        if unknown:
            problems.append(
                f"{where}: function mapping keys {unknown} are not values of "
                f"{step.group_by!r} on this plate (values: {', '.join(valid)})"
            )
    return problems


def _metadata_problems(layout: PlateLayout, spec: Any, where: str, sites: int) -> list[str]:
    """A function's metadata inputs the plate cannot give (grid, overlap, stage positions)."""
    if "site_positions_px" in spec.metadata_inputs:  # placed by stage positions, else by grid
        problem = stitch_metadata_problem(layout, spec.name, sites)
        return [f"{where}: {problem}"] if problem else []
    problems = []
    if "grid" in spec.metadata_inputs:
        grid = layout.grid
        if grid is None:
            problems.append(f"{where}: {spec.name} needs the site grid, which the plate lacks")
        elif sites != grid[0] * grid[1]:
            problems.append(
                f"{where}: {spec.name} needs {grid[0]}x{grid[1]} sites per well, "
                f"but {sites} reach this step (already stitched?)"
            )
    if "overlap" in spec.metadata_inputs and layout.tile_overlap is None:
        problems.append(f"{where}: {spec.name} needs the tile overlap, which the plate lacks")
    return problems


def component_values(layout: PlateLayout, comp: str, sizes: Sizes) -> list[str]:
    """The values of one axis still present at a step (as strings, as mapping keys are)."""
    values = {
        "site": layout.sites,
        "channel": layout.channels,
        "z": layout.z_planes,
        "timepoint": layout.timepoints,
    }[comp]
    return [str(v) for v in values][: sizes[comp]]


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


def _yx_after(step: Step, layout: PlateLayout, yx: tuple[int, int]) -> tuple[int, int]:
    for chain in step.chains().values():
        for call in chain:
            if call.name in _YX_BOUNDS:
                yx = _YX_BOUNDS[call.name](dict(call.kwargs), layout, yx)
    return yx


def disconnected_steps(
    steps: tuple[Step, ...], found: list[StepCheck], res: Resolution
) -> list[str]:
    """Steps whose output nobody reads: the next step restarts and nothing is checkpointed."""
    problems = []
    for i in range(len(steps) - 1):
        nxt = steps[i + 1]
        kept = bool(res.per_step[i].value("step_materialization_config.enabled"))
        if nxt.input_source == "pipeline_start" and not kept and not found[i].special_outputs:
            problems.append(
                f"step {i} {steps[i].name!r}: its output is never used (step {i + 1} "
                f"{nxt.name!r} reads from the pipeline start). Enable "
                "step_materialization_config for it, or remove it"
            )
    return problems


def code_versions(step: Step, cache: dict[str, str] | None = None) -> dict[str, str]:
    """{function name: code version} of every function a step runs (see FunctionSpec).

    `cache` (name -> version) spares re-reading a function's source within one compilation.
    """
    from prefect_hcs.processing.registry import get_function

    cache = {} if cache is None else cache
    out = {}
    for name in sorted(set(step.function_names())):
        if name not in cache:
            cache[name] = get_function(name).code_version()
        out[name] = cache[name]
    return out
