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
7. fingerprint (`fingerprint`): the frozen, fingerprinted step plans and plate plan.

Problems of phases 1–4 are reported together; phase 5's (URLs escaping their folder) after.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from prefect_hcs.errors import UserFacingError
from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.pipeline.backends import choose_backends
from prefect_hcs.pipeline.chunks import chunk_wells
from prefect_hcs.pipeline.discover import discover, secret_option_problems
from prefect_hcs.pipeline.fingerprint import freeze
from prefect_hcs.pipeline.model import Pipeline
from prefect_hcs.pipeline.paths import plan_paths
from prefect_hcs.pipeline.plan import PlatePlan
from prefect_hcs.pipeline.resolution import resolve_layers
from prefect_hcs.pipeline.shapes import check_pipeline

__all__ = ["CompileError", "compile_plate", "secret_option_problems"]


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


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the plans are built.

    A 384-well plate gives ~4,000 step plans and ~10,000 source planes that all survive: the
    collector would walk them again and again (measured: more than half of the compile time),
    and none of them is cyclic garbage. Reference counting still frees everything else. mypy
    does the same for its build; the collector is restored to its previous state afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
    with _gc_paused():
        return _compile(
            layout, pipeline, global_layer, pipeline_layer, storage_options, output_storage_options
        )


def _compile(
    layout: PlateLayout,
    pipeline: Pipeline,
    global_layer: BaseModel | None,
    pipeline_layer: BaseModel | None,
    storage_options: dict[str, Any] | None,
    output_storage_options: dict[str, Any] | None,
) -> PlatePlan:
    """`compile_plate`: the phases, in order; problems of a group of phases stop the next."""
    found = discover(layout, pipeline, storage_options, output_storage_options)
    _stop_on(() if found.steps else found.problems)
    res = resolve_layers(found, global_layer, pipeline_layer)
    checked = check_pipeline(res, found.steps)
    chosen = choose_backends(res, found.steps, checked)
    _stop_on(found.problems, res.problems, checked.problems, chosen.problems)
    paths = plan_paths(found, res, checked, chosen, output_storage_options)
    _stop_on(paths.problems)
    max_runs = int(res.base.value("execution_config.max_task_runs"))
    chunks = chunk_wells(res.wells, max_runs, chosen.workers)
    return freeze(found, res, checked, chosen, paths, chunks)
