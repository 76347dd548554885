"""`prefect-hcs`: the command line. Thin over the library; imports heavy parts lazily."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from prefect_hcs.cli_console import (
    HcsTyper,
    debug_enabled,
    quiet_user_errors_on_console,
    set_debug,
)

app = HcsTyper(
    help="High-content-screening pipelines over multi-well plates, as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect config layers.", no_args_is_help=True)
blocks_app = typer.Typer(help="Manage prefect-hcs Prefect blocks.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(blocks_app, name="blocks")

console = Console()
err_console = Console(stderr=True)

GlobalOpt = Annotated[
    str | None, typer.Option("--global-config", "-g", help="YAML file or hcs-global-config block.")
]
PipelineOpt = Annotated[
    str | None,
    typer.Option("--pipeline-config", "-p", help="YAML file or hcs-pipeline-config block."),
]


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    if debug_enabled() and sys.exc_info()[1] is not None:
        import traceback

        traceback.print_exc()  # --debug: the full traceback of the error being reported
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Print full tracebacks, also for input mistakes.")
    ] = False,
    server_port: Annotated[
        int | None,
        typer.Option(
            "--server-port",
            min=1,
            max=65535,
            help="Port for the local Prefect server started when no API is configured "
            "(default: Prefect's PREFECT_SERVER_API_PORT setting, else 4200).",
        ),
    ] = None,
) -> None:
    """High-content-screening pipelines over multi-well plates, as Prefect flows."""
    from prefect_hcs.runtime.api import set_requested_port

    set_debug(debug)
    set_requested_port(server_port)


def _connect(*refs: str | None, always: bool = True) -> None:
    """Find the Prefect API (see runtime/api.py) before blocks are loaded or saved.

    With `always=False` only when one of `refs` names a block (layer files need no API).
    """
    from prefect_hcs.blocks.sources import is_block_name
    from prefect_hcs.runtime.api import ensure_api

    if not always and not any(is_block_name(r) for r in refs):
        return
    try:
        api = ensure_api()
    except _user_errors() as exc:
        _fail(str(exc))
    if api.started_now:  # stderr: stdout may be JSON
        err_console.print(f"started a local Prefect server at {api.ui_url} (pid {api.pid})")


def _user_errors() -> tuple[type[BaseException], ...]:
    from prefect_hcs.blocks.sources import BlockNotFoundError
    from prefect_hcs.config.layers import ConfigError

    errors: list[type[BaseException]] = [ConfigError, BlockNotFoundError]
    try:
        from prefect_hcs.errors import UserFacingError

        errors.append(UserFacingError)
    except ImportError:  # pragma: no cover - during bootstrap only
        pass
    return tuple(errors)


@config_app.command("explain")
def config_explain(
    global_config: GlobalOpt = None,
    pipeline_config: PipelineOpt = None,
    step_config: Annotated[
        str | None, typer.Option("--step-config", "-s", help="YAML file with step overrides.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON keyed by dotted path.")
    ] = False,
) -> None:
    """Print every resolved config field, its value and the layer that set it."""
    from prefect_hcs.blocks.sources import load_layer_source
    from prefect_hcs.config import resolve

    _connect(global_config, pipeline_config, step_config, always=False)
    try:
        g = load_layer_source(global_config, "global")
        p = load_layer_source(pipeline_config, "pipeline")
        s = load_layer_source(step_config, "step")
    except _user_errors() as exc:
        _fail(str(exc))
    resolved = resolve(g, p, s)
    data = resolved.to_json()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    table = Table(title="Resolved configuration", show_lines=False)
    table.add_column("field")
    table.add_column("value")
    table.add_column("layer")
    table.add_column("inherited from")
    for dotted, entry in data.items():
        src = resolved.source(dotted)
        style = "dim" if src.layer == "default" else None
        layer = "default (static override)" if src.static_override else src.layer
        via = src.path if src.path != dotted else ""
        table.add_row(dotted, json.dumps(entry["value"]), layer, via, style=style)
    console.print(table)


@blocks_app.command("apply")
def blocks_apply(
    folder: Annotated[Path, typer.Argument(help="Folder of block YAML files.")] = Path("blocks"),
    dry_run: Annotated[bool, typer.Option(help="Validate only; save nothing.")] = False,
) -> None:
    """Create or update block documents from YAML files (all validated before any is saved)."""
    from prefect_hcs.blocks.apply import apply_block_specs, read_block_specs

    try:
        specs = read_block_specs(folder)
    except _user_errors() as exc:
        _fail(f"{exc}\nNothing was saved.")
    if dry_run:
        for spec in specs:
            console.print(f"valid: {spec.block_type}/{spec.name} ({spec.origin})")
        return
    _connect()
    for saved in apply_block_specs(specs):
        console.print(f"saved {saved}")


def main() -> None:  # pragma: no cover
    """Run the `prefect-hcs` command line (for ``python -m`` and embedding; the script is `app`)."""
    app()


# ------------------------------------------------------------------------------------ plates
@app.command("make-plate")
def make_plate_cmd(
    out: Annotated[str, typer.Argument(help="Folder (or fsspec URL) to write the plate into.")],
    format: Annotated[
        str, typer.Option(help="imagexpress, phenix, operetta or cellvoyager.")
    ] = "imagexpress",
    variant: Annotated[
        str | None,
        typer.Option(
            help="phenix/operetta: the Harmony index, v5 (Index.idx.xml) or v7 (Index.xml); "
            "imagexpress: 'acquisition' (instrument folder, no .HTD) or 'export' (HTD, "
            "TimePoint_/ZStep_ folders), MetaSeries XML + LZW. Default: the classic plate."
        ),
    ] = None,
    wells: Annotated[
        str, typer.Option(help="Comma-separated wells, or a count N.")
    ] = "A01,A02,B01,B02",
    sites: Annotated[int, typer.Option(help="Sites per well (a grid: 4 = 2x2).")] = 4,
    channels: Annotated[int, typer.Option()] = 2,
    z: Annotated[int, typer.Option(help="z-planes.")] = 3,
    size: Annotated[int, typer.Option(help="Tile edge in pixels.")] = 256,
    overlap: Annotated[float, typer.Option()] = 0.1,
    seed: Annotated[int, typer.Option()] = 0,
    timepoints: Annotated[int, typer.Option(help="Timepoints (with --variant).")] = 1,
    mixed: Annotated[
        bool,
        typer.Option(
            help="With --variant: a mixed acquisition (DAPI stack + projection, FITC one plane, "
            "Cy5 projection only, TexasRed only at timepoint 1)."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a plate make-plate wrote there before (nothing else).")
    ] = False,
) -> None:
    """Write a realistic synthetic plate plus ground_truth.json (nuclei counts, tile positions)."""
    from prefect_hcs.testing.generators import make_any_plate
    from prefect_hcs.testing.plate_target import write_plate_into

    try:
        well_list = _parse_wells(wells)
        if format == "imagexpress" and variant is not None:
            write_plate_into(
                out,
                overwrite,
                lambda url: _make_metaxpress(
                    url,
                    variant,
                    well_list,
                    sites,
                    channels,
                    z,
                    timepoints,
                    size,
                    overlap,
                    seed,
                    mixed,
                ),  # fmt: skip
            )
            return
    except _user_errors() as exc:
        _fail(str(exc))
    options = dict(sites=sites, channels=channels, z=z, size=size, overlap=overlap, seed=seed)
    handled: tuple[type[BaseException], ...] = (
        *_user_errors(),
        ValueError,
        TypeError,
    )  # incl. the generators' argument checks
    try:
        truth = write_plate_into(
            out,
            overwrite,
            lambda url: make_any_plate(
                url, format=format, variant=variant, wells=well_list, **options
            ),
        )
    except handled as exc:
        if not isinstance(exc, _user_errors()):
            _fail(f"make-plate: {exc}")
        _fail(str(exc))
    total = sum(w["nuclei"] for w in truth["wells"].values())
    console.print(
        f"wrote a {format} plate: {len(well_list)} wells × {sites} sites × {channels} channels × "
        f"{z} z at {size}² → {out} ({total} nuclei; ground truth in ground_truth.json)"
    )


def _make_metaxpress(
    out: str, variant: str, wells: list[str], sites: int, channels: int, z: int,
    timepoints: int, size: int, overlap: float, seed: int, mixed: bool,
) -> None:  # fmt: skip
    from prefect_hcs.testing.synthetic_imagexpress import MIXED_CHANNELS, make_imagexpress_plate

    if variant not in ("acquisition", "export"):
        _fail(f"--variant {variant!r} is not valid for imagexpress: use acquisition or export")
    try:
        truth = make_imagexpress_plate(
            out, variant=variant, wells=wells, sites=sites, z=z, timepoints=timepoints,  # type: ignore[arg-type]
            channels=MIXED_CHANNELS if mixed else channels, size=size, overlap=overlap, seed=seed,
        )  # fmt: skip
    except ValueError as exc:
        _fail(f"make-plate: {exc}")
    console.print(
        f"wrote a {truth['variant']} plate: {len(wells)} wells × {sites} sites × "
        f"{len(truth['channels'])} channels × {z} z × {timepoints} t at {size}² → "
        f"{truth['plate_path']} (ground truth in {out}/ground_truth.json)"
    )


def _parse_wells(spec: str) -> list[str]:
    from prefect_hcs.formats.layout import PlateError
    from prefect_hcs.formats.wells import WellId, WellIdError, well_id

    if spec.isdigit():
        n = int(spec)
        cols = 12 if n > 8 else n
        return [well_id(i // cols, i % cols) for i in range(n)]
    try:
        return [WellId.parse(w).name for w in spec.split(",") if w.strip()]
    except WellIdError as exc:
        raise PlateError(f"--wells: {exc}") from None


PipelineArg = Annotated[
    str | None,
    typer.Option("--pipeline", help="Built-in name (demo), or a YAML/JSON pipeline file."),
]
OptionsArg = Annotated[
    str | None,
    typer.Option(
        "--storage-options",
        help="JSON object passed to the plate's filesystem (no secrets: name a "
        '"credentials_block").',
    ),
]
OutputOptionsArg = Annotated[
    str | None,
    typer.Option(
        "--output-storage-options",
        help="JSON object for the output's filesystem (default: the plate's, on the same kind "
        "of store).",
    ),
]


def _output_options(text: str | None) -> dict | None:
    return _options(text, "--output-storage-options") if text else None


def _options(text: str | None, flag: str = "--storage-options") -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{flag} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        _fail(f"{flag} must be a JSON object")
    from prefect_hcs.pipeline.compiler import secret_option_problems

    if problems := secret_option_problems(value):
        _fail("\n".join(problems))  # refused before it could reach run parameters or logs
    return value


@app.command("plan")
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

    _connect(global_config, pipeline_config, always=False)
    try:
        plan = compile_from_parameters(
            plate,
            pipeline,
            global_config,
            pipeline_config,
            _options(storage_options),
            _output_options(output_storage_options),
        )
    except _user_errors() as exc:
        _fail(str(exc))
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


@app.command("validate")
def validate_cmd(
    url: Annotated[str, typer.Argument(help="OME-Zarr plate to validate.")],
    storage_options: OptionsArg = None,
) -> None:
    """Validate an OME-Zarr HCS plate with independent validators (yaozarrs, ome-zarr-models)."""
    from prefect_hcs.formats.validate_zarr import validate_plate
    from prefect_hcs.runtime.stores import fsspec_options

    try:
        options = fsspec_options(url, _options(storage_options))  # a credentials block, loaded
    except _user_errors() as exc:
        _fail(str(exc))
    problems = validate_plate(url, options)
    if problems:
        for p in problems:
            err_console.print(f"[red]✗[/] {p}")
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {url} is a valid OME-Zarr (NGFF 0.5) HCS plate")


# ------------------------------------------------------------------------------------ runs
def _run_flow(
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

    from prefect_hcs.runtime.api import ensure_api

    if show_progress:  # before Prefect is imported (it configures logging at import)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    try:
        api = ensure_api()
    except _user_errors() as exc:
        _fail(str(exc))
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
        _fail(
            f"{error}\n(run: {url})"
            if isinstance(error, BaseException)
            else f"run {state.name}: {url}",
            1,
        )
    return state.result(), url


@app.command("run")
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
    summary, url = _run_flow(
        plate,
        pipeline,
        global_config,
        pipeline_config,
        _options(storage_options),
        overwrite,
        not no_progress,
        _output_options(output_storage_options),  # fmt: skip
    )
    _print_summary(summary, url)


def _print_summary(summary: dict, url: str | None) -> None:
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


@app.command("demo")
def demo_cmd(
    out: Annotated[
        Path, typer.Option(help="Everything the demo writes goes under this folder.")
    ] = Path("hcs-demo"),
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    omero: Annotated[
        bool, typer.Option("--omero", help="Use the plate from an OMERO stand-in (under --out).")
    ] = False,
) -> None:
    """Make a small synthetic plate and process it as a Prefect flow; print where outputs are."""
    from prefect_hcs.formats.validate_zarr import validate_plate
    from prefect_hcs.runtime import io as hio
    from prefect_hcs.testing.synthetic import make_plate

    out = out.resolve()
    if omero:
        from prefect_hcs.testing.omero_demo import describe_omero_outputs, prepare_omero_demo

        d = prepare_omero_demo(out)
        console.print(f"OMERO stand-in at {d['standin_dir']}; plate {d['plate']}")
        summary, url = _run_flow(
            d["plate"],
            "demo",
            d["global_config"],
            d["pipeline_config"],
            d["storage_options"],
            False,
            not no_progress,  # fmt: skip
        )
        _print_summary(summary, url)
        for line in describe_omero_outputs(d["plate"], d["storage_options"]):
            console.print(f"  {line}")
        return
    plate = out / "DemoPlate"
    if not (plate / "ground_truth.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        make_plate(
            str(plate),
            format="imagexpress",
            wells=["A01", "A02", "A03", "B01", "B02", "B03"],
            sites=4,
            channels=2,
            z=3,
            size=256,
            seed=7,
            plate_name="DemoPlate",  # fmt: skip
        )
        console.print(f"wrote a synthetic ImageXpress plate: {plate}")
    summary, url = _run_flow(str(plate), "demo", None, None, {}, False, not no_progress)
    _print_summary(summary, url)
    problems = validate_plate(summary["output"])
    if problems:
        _fail("the output did not validate:\n" + "\n".join(problems), 1)
    truth = json.loads((plate / "ground_truth.json").read_text())

    rows = hio.csv_to_rows(hio.read_bytes(summary["tables"]["count.measurements"]))
    counted = {r["well"]: int(r["nuclei_count"]) for r in rows}
    pairs = ", ".join(f"{w} {counted[w]}/{truth['wells'][w]['nuclei']}" for w in sorted(counted))
    console.print(f"  nuclei counted/true: {pairs}")
    console.print(
        "  validated with yaozarrs + ome-zarr-models + ome-zarr-py. Open it with:\n"
        f"    python -c \"import zarr; print(zarr.open_group('{summary['output']}').attrs['ome'])\"\n"
        f"    napari --plugin napari-ome-zarr {summary['output']}   (if napari is installed)"
    )


def _register_extensions() -> None:
    """Commands that live in their own modules (deployments, serving)."""
    from prefect_hcs.cli_deployments import register
    from prefect_hcs.cli_functions import register as register_functions

    register(app)
    register_functions(app)


_register_extensions()


@app.command("retry-failed")
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
    except _user_errors() as exc:
        _fail(str(exc))
    if failed:
        _fail(f"{failed} retried plate run(s) did not complete (see above)", 1)
