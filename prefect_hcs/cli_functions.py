"""`prefect-hcs functions list|show NAME`: the registered processing functions and their kwargs."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

functions_app = typer.Typer(
    help="List registered processing functions and show their kwargs.", no_args_is_help=True
)
_console = Console()
_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the `functions` command group to the main CLI."""
    app.add_typer(functions_app, name="functions")


@functions_app.command("list")
def list_cmd(
    source: Annotated[
        str | None,
        typer.Option(help="Only names starting with this, e.g. skimage.filters, or 'builtin'."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
) -> None:
    """Every function a pipeline can name, with its default components and description."""
    from prefect_hcs.processing import all_specs
    from prefect_hcs.processing.catalog import summary_row

    specs = all_specs()
    if source == "builtin":
        specs = [s for s in specs if not s.source]
    elif source:
        specs = [s for s in specs if s.name.startswith(source)]
    rows = [summary_row(s) for s in specs]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("function", "components", "description", title=f"{len(rows)} functions")
    for r in rows:
        table.add_row(r["name"], r["components"], r["description"])
    _console.print(table)


@functions_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Registered name, e.g. skimage.filters.gaussian.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One function's kwargs: type, default and description, as the compiler checks them."""
    from prefect_hcs.processing import UnknownFunctionError, get_function
    from prefect_hcs.processing.catalog import describe

    try:
        info = describe(get_function(name))
    except UnknownFunctionError as exc:
        _err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
        return
    _console.print(f"[bold]{info['name']}[/]  ({info['source']})", highlight=False)
    _console.print(info["description"], highlight=False)
    _console.print(
        f"components: {info['components']} · input dtypes: {info['input_dtypes']}", highlight=False
    )
    table = Table("kwarg", "type", "default", "description")
    for p in info["parameters"]:
        table.add_row(p["name"], p["type"], p["default"], p["description"])
    _console.print(table)
