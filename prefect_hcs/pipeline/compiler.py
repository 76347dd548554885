"""The compiler: (plate layout, config layers, pipeline) → a validated, frozen `PlatePlan`.

Everything that can be decided before reading pixels is decided here, and every mistake that can
be caught here is: unknown functions or kwargs, a mapping pattern naming channels the plate does
not have, a step whose output nobody reads, a backend the plate source cannot take, an output
location equal to (or inside) the input plate, an empty well selection. Errors name the step, the
config field and the fix. The compiler is pure: no Prefect, no pixel I/O, safe to run anywhere.

`compile_plate` is a list of phases, each a small pure function in its own module that returns
its result and the problems it found:

1. discover (`discover`): enabled steps, layout report, stage positions, secret-looking options;
2. resolve layers (`resolution`): global → pipeline → step configs, planes and wells selected;
3. check the pipeline (`shapes`): functions, kwargs, components, stack shapes, limits;
4. choose backends (`backends`): output root, images, intermediates, reads, checkpoints;
5. plan paths (`paths`): every URL per well and step, the output plan, plate-level steps;
6. chunk (`chunks`): wells per task run;
7. fingerprint (`fingerprint`): frozen step plans and the plate plan, fingerprinted.

Problems of phases 1–4 are reported together; phase 5's (URLs escaping their folder) after.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from prefect_hcs.errors import UserFacingError
from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.pipeline.backends import choose_backends
from prefect_hcs.pipeline.chunks import chunk_wells
from prefect_hcs.pipeline.discover import discover, secret_option_problems
from prefect_hcs.pipeline.fingerprint import fingerprint_plan, fingerprint_steps
from prefect_hcs.pipeline.model import Pipeline
from prefect_hcs.pipeline.paths import plan_paths
from prefect_hcs.pipeline.plan import PlatePlan
from prefect_hcs.pipeline.resolution import resolve_layers
from prefect_hcs.pipeline.shapes import check_pipeline, code_versions

__all__ = ["CompileError", "code_versions", "compile_plate", "secret_option_problems"]


class CompileError(UserFacingError, ValueError):
    """The run cannot be planned as configured. Lists every problem found, each with its fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "the plate run cannot be compiled:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _stop_on(*problems: tuple[str, ...]) -> None:
    """Raise `CompileError` with every problem, if there is any."""
    if found := [p for group in problems for p in group]:
        raise CompileError(found)


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
    found = discover(layout, pipeline, storage_options, output_storage_options)
    _stop_on(() if found.steps else found.problems)
    res = resolve_layers(found, global_layer, pipeline_layer)
    checked = check_pipeline(res, found.steps)
    chosen = choose_backends(res, found.steps, checked)
    _stop_on(found.problems, res.problems, checked.problems, chosen.problems)
    paths = plan_paths(found, res, checked, chosen, output_storage_options)
    _stop_on(paths.problems)
    base = res.base
    plan = PlatePlan(
        plate_id=res.layout.plate_id,
        plate_url=res.layout.url,
        plate_format=res.layout.format,
        storage_options=found.storage_options,
        pipeline_name=found.pipeline.name,
        pipeline=found.pipeline.to_data(),
        wells=res.wells,
        steps=tuple(s.name for s in found.steps),
        chunks=chunk_wells(
            res.wells,
            len(found.steps),
            int(base.value("execution_config.max_task_runs")),
            chosen.workers,
        ),
        intermediates_in_memory=chosen.in_memory,
        task_runner=chosen.runner,
        dask_address=chosen.target.dask_address,
        slurm_cluster=chosen.target.slurm_cluster,
        num_workers=chosen.workers,
        retries=int(base.value("execution_config.retries")),
        retry_delay_seconds=float(base.value("execution_config.retry_delay_seconds")),
        output=paths.output,
        resolved_config={
            s.name: r.to_json() for s, r in zip(found.steps, res.per_step, strict=True)
        },
        step_plans=fingerprint_steps(paths.steps, paths.drafts, paths.source_json),
        plate_steps=paths.plate_steps,
        warnings=(*found.warnings, *checked.warnings),
        layout=found.report,
    )
    return fingerprint_plan(plan)
