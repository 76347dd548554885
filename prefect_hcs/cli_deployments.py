"""`prefect-hcs serve`: run the project's deployments from this process (see runtime/serve.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the deployment commands to the main CLI."""
    app.command("serve")(serve_cmd)


def serve_cmd(
    name: Annotated[str, typer.Option(help="Deployment name of the three flows.")] = "hcs",
    watch_folder: Annotated[
        str | None,
        typer.Option(help="Folder (fsspec URL) the watch deployment scans on its schedule."),
    ] = None,
    watch_cron: Annotated[str, typer.Option(help="Cron schedule of the watch.")] = "*/5 * * * *",
    global_config: Annotated[
        str | None, typer.Option("--global-config", "-g", help="Default global config block.")
    ] = None,
    pipeline_config: Annotated[
        str | None, typer.Option("--pipeline-config", "-p", help="Default pipeline config block.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="At most this many flow runs at once in this process.")
    ] = None,
) -> None:
    """Serve process-plate, process-screen and watch-plates (blocks until Ctrl-C).

    Uses PREFECT_API_URL, or the local server `prefect-hcs run` uses (started if needed).
    """
    from prefect_hcs.errors import UserFacingError
    from prefect_hcs.runtime.api import ensure_api

    try:
        api = ensure_api()
    except UserFacingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    defaults = {
        k: v
        for k, v in {"global_config": global_config, "pipeline_config": pipeline_config}.items()
        if v
    }
    typer.echo(
        f"serving against {api.url}: process-plate/{name}, process-screen/{name}, "
        f"watch-plates/{name}"
        + (f" (watching {watch_folder} on {watch_cron!r})" if watch_folder else "")
        + (f"; defaults {json.dumps(defaults)}" if defaults else "")
    )
    from prefect_hcs.runtime.serve import serve_all

    serve_all(
        name, watch_folder=watch_folder, watch_cron=watch_cron, defaults=defaults, limit=limit
    )
