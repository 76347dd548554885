"""`prefect-hcs`: the command line. Thin over the library; imports heavy parts lazily."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
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
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


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
    for saved in apply_block_specs(specs):
        console.print(f"saved {saved}")


def main() -> None:  # pragma: no cover
    app()
