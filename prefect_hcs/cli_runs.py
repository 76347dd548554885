"""`prefect-hcs plan | validate | run | retry-failed`: compile, check and run plate flows."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from prefect_hcs.cli_common import (
    GlobalOpt,
    OptionsArg,
    OutputOptionsArg,
    PipelineArg,
    PipelineOpt,
    connect,
    console,
    err_console,
    fail,
    output_options_arg,
    storage_options_arg,
    user_errors,
)
from prefect_hcs.cli_console import quiet_user_errors_on_console

__all__ = ["plan_cmd", "print_summary", "retry_failed_cmd", "run_cmd", "run_flow", "validate_cmd"]


def plan_cmd(
    plate: Annotated[str, typer.Argument(help="Plate folder / URL (or omero://plate_<id>).")],
    pipeline: PipelineArg = None,
    global_config: GlobalOpt = None,
    pipeline_config: PipelineOpt = None,
    storage_options: OptionsArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every step plan as JSON.")] = False,
    output_storage_options: OutputOptionsArg = None,
) -> None:
    """Compile and validate the plan of a plate run without reading any pixel."""
    from prefect_hcs.runtime.compile import compile_from_parameters

    connect(global_config, pipeline_config, always=False)
    try:
        plan = compile_from_parameters(
            plate,
            pipeline,
            global_config,
            pipeline_config,
            storage_options_arg(storage_options),
            output_options_arg(output_storage_options),
        )
    except user_errors() as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(plan.summary_json(), indent=1) + "\n")
        return
    if plan.layout:
        from prefect_hcs.formats.report import layout_lines

        found = Table(title=f"Plate {plan.plate_id}: what was found", show_header=False)
        for label, text in layout_lines(plan.layout):
            found.add_row(label, text)
        console.print(found)
    table = Table(title=f"Plan of {plan.plate_id} ({plan.pipeline_name})")
    for col in ("step", "read", "write", "materialized", "why (materialized)"):
        table.add_column(col)
    first = [p for p in plan.step_plans if p.well == plan.wells[0]]
    for p in first:
        table.add_row(
            p.step_name,
            p.read_backend,
            p.write_backend,
            p.materialized_backend,
            p.backend_reasons["materialized_backend"],  # fmt: skip
        )
    console.print(table)
    console.print(
        f"{len(plan.wells)} wells · {len(plan.chunks)} chunks · {plan.task_count} task runs · "
        f"output {plan.output.zarr_url or plan.output.root}\nplan fingerprint {plan.fingerprint}"
    )
    for w in plan.warnings:
        console.print(f"[yellow]warning:[/] {w}")


def validate_cmd(
    url: Annotated[str, typer.Argument(help="OME-Zarr plate to validate.")],
    storage_options: OptionsArg = None,
) -> None:
    """Validate an OME-Zarr HCS plate with independent validators (yaozarrs, ome-zarr-models)."""
    from prefect_hcs.formats.validate_zarr import validate_plate
    from prefect_hcs.runtime.stores import fsspec_options

    try:  # a credentials block, loaded
        options = fsspec_options(url, storage_options_arg(storage_options))
    except user_errors() as exc:
        fail(str(exc))
    problems = validate_plate(url, options)
    if problems:
        for p in problems:
            err_console.print(f"[red]✗[/] {p}")
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {url} is a valid OME-Zarr (NGFF 0.5) HCS plate")


def run_flow(
    plate: str,
    pipeline: str | None,
    global_config: str | None,
    pipeline_config: str | None,
    options: dict,
    overwrite: bool,
    show_progress: bool,
    output_options: dict | None = None,
) -> tuple[dict, str | None]:
    """Run `process-plate` in this process against a real API; returns (summary, run URL)."""
    import os

    if "://" not in plate:  # the run records (and retry-failed replays) an absolute path
        plate = os.path.join(os.getcwd(), os.path.expanduser(plate))  # keeps '..' to refuse
        # a typo: one line, before any Prefect server is started ('..' is the compiler's to refuse)
        if ".." not in plate.split(os.sep) and not os.path.exists(plate):
            fail(f"plate folder not found: {plate}. Check the path, or give an fsspec URL.")

    from prefect_hcs.runtime.api import ensure_api

    if show_progress:  # before Prefect is imported (it configures logging at import)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    try:
        api = ensure_api()
    except user_errors() as exc:
        fail(str(exc))
    if api.started_now:
        console.print(
            f"started a local Prefect server at {api.ui_url} (pid {api.pid}, log {api.log}); "
            "it keeps running so you can open the run in the UI"
        )
    quiet_user_errors_on_console()  # the UI keeps the engine's tracebacks; the console one line
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn

    from prefect_hcs.runtime import progress as hprogress
    from prefect_hcs.runtime.flow import process_plate

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,  # fmt: skip
    )
    ids: dict[str, TaskID] = {}

    def on_event(event: dict) -> None:
        if event["event"] == "compiled":
            ids["wells"] = bar.add_task("wells", total=event["wells"])
        elif event["event"] in ("chunk-done", "chunk-failed") and "wells" in ids:
            bar.advance(ids["wells"], event["wells"])

    hprogress.add_listener(on_event)
    try:
        with bar:
            state = process_plate(
                plate=plate,
                pipeline=pipeline,
                global_config=global_config,
                pipeline_config=pipeline_config,
                storage_options=options,
                overwrite=overwrite,
                output_storage_options=output_options,
                return_state=True,  # fmt: skip
            )
    finally:
        hprogress.remove_listener(on_event)
    run_id = state.state_details.flow_run_id
    url = f"{api.ui_url}/runs/flow-run/{run_id}" if run_id else None
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        fail(
            f"{error}\n(run: {url})"
            if isinstance(error, BaseException)
            else f"run {state.name}: {url}",
            1,
        )
    return state.result(), url


def run_cmd(
    plate: Annotated[str, typer.Argument(help="Plate folder / fsspec URL / omero://plate_<id>.")],
    pipeline: PipelineArg = None,
    global_config: GlobalOpt = None,
    pipeline_config: PipelineOpt = None,
    storage_options: OptionsArg = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an output plate compiled from a different source.")
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Plain Prefect logs.")] = False,
    output_storage_options: OutputOptionsArg = None,
) -> None:
    """Process one plate as a Prefect flow run (against PREFECT_API_URL or a local server)."""
    summary, url = run_flow(
        plate,
        pipeline,
        global_config,
        pipeline_config,
        storage_options_arg(storage_options),
        overwrite,
        not no_progress,
        output_options_arg(output_storage_options),  # fmt: skip
    )
    print_summary(summary, url)


def print_summary(summary: dict, url: str | None) -> None:
    """The run's outcome: wells done, where the outputs are, the run in the Prefect UI."""
    console.print(
        f"[green]✓[/] plate {summary['plate_id']}: {summary['wells_completed']} wells in "
        f"{summary['seconds']} s"
    )
    label = "OMERO outputs:" if summary["output"].startswith("omero://") else "OME-Zarr plate:"
    console.print(f"  {label:<15} {summary['output']}")
    for name, table in summary.get("tables", {}).items():
        console.print(f"  table {name}: {table}")
    if url:
        console.print(f"  Prefect UI:     {url}")


def retry_failed_cmd(
    since: Annotated[
        str | None, typer.Option(help="Only runs started after this (24h, 7d, or ISO time).")
    ] = None,
    deployment: Annotated[str | None, typer.Option(help="Only runs of this deployment.")] = None,
    dry_run: Annotated[bool, typer.Option(help="List what would be retried.")] = False,
    stuck_after: Annotated[
        str | None,
        typer.Option(help="Also treat runs Running longer than this (e.g. 12h) as dead."),
    ] = None,
) -> None:
    """Retry failed/crashed plate runs, and Running ones whose process died.

    Deployment runs are rescheduled, others run here again (with the absolute paths recorded
    when they first ran); a retried plate skips wells whose outputs are complete and valid.
    Exits 1 if a retry run here does not complete.
    """
    from prefect_hcs.runtime.retry import run_retry_failed

    try:
        say = lambda line: console.print(line, soft_wrap=True, highlight=False)  # noqa: E731
        failed = run_retry_failed(since, deployment, dry_run, stuck_after, say)
    except user_errors() as exc:
        fail(str(exc))
    if failed:
        fail(f"{failed} retried plate run(s) did not complete (see above)", 1)
