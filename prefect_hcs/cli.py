"""`prefect-hcs`: the command line. Thin over the library; imports heavy parts lazily.

This module holds the app, its global options and the ``config``/``blocks`` groups; the commands
live in `cli_plates` (make-plate, demo), `cli_runs` (plan, validate, run, retry-failed),
`cli_deployments` (serve) and `cli_functions` (functions), sharing `cli_common`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from prefect_hcs.cli_common import GlobalOpt, PipelineOpt, connect, console, fail, user_errors
from prefect_hcs.cli_console import HcsTyper, set_debug
from prefect_hcs.cli_plates import demo_cmd, make_plate_cmd
from prefect_hcs.cli_runs import plan_cmd, retry_failed_cmd, run_cmd, validate_cmd

app = HcsTyper(
    help="High-content-screening pipelines over multi-well plates, as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect config layers.", no_args_is_help=True)
blocks_app = typer.Typer(help="Manage prefect-hcs Prefect blocks.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(blocks_app, name="blocks")


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

    connect(global_config, pipeline_config, step_config, always=False)
    try:
        g = load_layer_source(global_config, "global")
        p = load_layer_source(pipeline_config, "pipeline")
        s = load_layer_source(step_config, "step")
    except user_errors() as exc:
        fail(str(exc))
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
    except user_errors() as exc:
        fail(f"{exc}\nNothing was saved.")
    if dry_run:
        for spec in specs:
            console.print(f"valid: {spec.block_type}/{spec.name} ({spec.origin})")
        return
    connect()
    for saved in apply_block_specs(specs):
        console.print(f"saved {saved}")


def main() -> None:  # pragma: no cover
    """Entry point equivalent to the ``prefect-hcs`` script."""
    app()


def _register_commands() -> None:
    """The commands, in the order `--help` lists them; each lives in its own module."""
    from prefect_hcs.cli_deployments import register
    from prefect_hcs.cli_functions import register as register_functions

    app.command("make-plate")(make_plate_cmd)
    app.command("plan")(plan_cmd)
    app.command("validate")(validate_cmd)
    app.command("run")(run_cmd)
    app.command("demo")(demo_cmd)
    register(app)
    register_functions(app)
    app.command("retry-failed")(retry_failed_cmd)


_register_commands()
