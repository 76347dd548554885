"""What every `prefect-hcs` command shares: the consoles, option types, errors, the API.

A command reports a user's mistake with `fail` (one ``error:`` line, exit 2; the traceback only
under ``--debug``); `user_errors` lists the exception types that are such mistakes.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from prefect_hcs.cli_console import debug_enabled

__all__ = [
    "GlobalOpt",
    "OptionsArg",
    "OutputOptionsArg",
    "PipelineArg",
    "PipelineOpt",
    "connect",
    "console",
    "err_console",
    "fail",
    "output_options_arg",
    "storage_options_arg",
    "user_errors",
]

console = Console()
err_console = Console(stderr=True)

GlobalOpt = Annotated[
    str | None, typer.Option("--global-config", "-g", help="YAML file or hcs-global-config block.")
]
PipelineOpt = Annotated[
    str | None,
    typer.Option("--pipeline-config", "-p", help="YAML file or hcs-pipeline-config block."),
]


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


def output_options_arg(text: str | None) -> dict | None:
    """The ``--output-storage-options`` JSON as a dict (None when not given)."""
    return storage_options_arg(text, "--output-storage-options") if text else None


def storage_options_arg(text: str | None, flag: str = "--storage-options") -> dict:
    """A storage-options JSON option as a dict; invalid JSON or a secret in it fails the command."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{flag} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        fail(f"{flag} must be a JSON object")
    from prefect_hcs.pipeline.compiler import secret_option_problems

    if problems := secret_option_problems(value):
        fail("\n".join(problems))  # refused before it could reach run parameters or logs
    return value


def fail(message: str, code: int = 2) -> None:
    """Print ``error: <message>`` (with the traceback under --debug) and exit with `code`."""
    from rich.markup import escape

    if debug_enabled() and sys.exc_info()[1] is not None:
        import traceback

        traceback.print_exc()  # --debug: the full traceback of the error being reported
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def connect(*refs: str | None, always: bool = True) -> None:
    """Find the Prefect API (see runtime/api.py) before blocks are loaded or saved.

    With `always=False` only when one of `refs` names a block (layer files need no API).
    """
    from prefect_hcs.blocks.sources import is_block_name
    from prefect_hcs.runtime.api import ensure_api

    if not always and not any(is_block_name(r) for r in refs):
        return
    try:
        api = ensure_api()
    except user_errors() as exc:
        fail(str(exc))
    if api.started_now:  # stderr: stdout may be JSON
        err_console.print(f"started a local Prefect server at {api.ui_url} (pid {api.pid})")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's to fix (reported as one line, no traceback)."""
    from prefect_hcs.blocks.sources import BlockNotFoundError
    from prefect_hcs.config.layers import ConfigError

    errors: list[type[BaseException]] = [ConfigError, BlockNotFoundError]
    try:
        from prefect_hcs.errors import UserFacingError

        errors.append(UserFacingError)
    except ImportError:  # pragma: no cover - during bootstrap only
        pass
    return tuple(errors)
