"""From flow parameters (URLs, names) to a compiled `PlatePlan`: the same code on every side.

The CLI's `plan` command and the flow (local, served or on a remote worker) both call
`compile_from_parameters`, so the same inputs give the same plan fingerprints everywhere.
"""

from __future__ import annotations

import os
from typing import Any

from prefect_hcs.blocks.sources import load_layer_source
from prefect_hcs.formats.geometry import quiet_tifffile
from prefect_hcs.pipeline.compiler import CompileError, compile_plate, secret_option_problems
from prefect_hcs.pipeline.model import load_pipeline
from prefect_hcs.pipeline.plan import PlatePlan
from prefect_hcs.runtime.preflight import header_problems, output_problems
from prefect_hcs.runtime.stores import check_location, fsspec_options
from prefect_hcs.storage.object_store import is_object_store
from prefect_hcs.storage.plates import discover_plate


def compile_from_parameters(
    plate: str,
    pipeline: Any = "demo",
    global_config: str | None = None,
    pipeline_config: str | None = None,
    storage_options: dict[str, Any] | None = None,
    output_storage_options: dict[str, Any] | None = None,
) -> PlatePlan:
    """Compile a plate run; object stores are probed first so a missing bucket, a wrong
    endpoint or refused credentials stop the run here, in one line (`stores.check_location`).
    """
    import prefect_hcs.processing  # noqa: F401 - registers the built-in functions

    problems = secret_option_problems(storage_options)
    problems += secret_option_problems(output_storage_options)
    if problems:
        raise CompileError(problems)  # before anything uses (or logs in with) the options
    if ".." in plate.replace("\\", "/").split("/"):
        raise CompileError(
            [
                f"plate URL {plate!r} contains '..': give the plate's own path (no parent steps), "
                "so a run cannot reach outside the folder it was given"
            ]  # fmt: skip
        )
    if "://" not in plate:  # a plate is the same plate from any working directory
        plate = os.path.normpath(os.path.join(os.getcwd(), os.path.expanduser(plate)))
    g = load_layer_source(global_config, "global")
    p = load_layer_source(pipeline_config, "pipeline")
    pipe = load_pipeline(pipeline)
    check_location(plate, storage_options, "plate")
    plate_options = _plate_options(plate, storage_options)
    with quiet_tifffile():  # its warnings about a damaged header are not the message
        layout = discover_plate(plate, plate_options)
    if problems := header_problems(layout, plate_options):
        raise CompileError(problems)  # before the geometry they contradict is used
    plan = compile_plate(
        layout,
        pipe,
        global_layer=g,
        pipeline_layer=p,
        storage_options=storage_options,
        output_storage_options=output_storage_options,
    )
    if problems := output_problems(plan, plan.output.storage_options):
        raise CompileError(problems)
    if plan.output.root_backend == "disk":
        check_location(plan.output.root, plan.output.storage_options, "output")
    return plan


def _plate_options(plate: str, storage_options: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the plate handlers get: object-store credentials resolved, other options as given."""
    if is_object_store(plate):
        return fsspec_options(plate, storage_options)
    return storage_options
