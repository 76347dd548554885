"""`prefect-hcs serve`: the deployments of deployments/prefect.yaml, served from one process.

`prefect deploy --all` registers the deployments for a work pool (a worker runs them);
`serve_all` registers the same flows, tags and concurrency limits and runs them itself, which is
the quickest way to get the Prefect UI's "Run" button working on one machine. The two lists are
kept equal by a test (tests/test_deployments_e2e.py::test_prefect_yaml_matches_serve).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Deployment name shared by the three flows ("process-plate/hcs", ...).
DEPLOYMENT_NAME = "hcs"
WATCH_CRON = "*/5 * * * *"


@dataclass(frozen=True)
class Spec:
    """One deployment as prefect.yaml declares it."""

    flow: str  # "module:attribute" of the flow object
    entrypoint: str  # what prefect.yaml points at (flows/…)
    tags: tuple[str, ...]
    concurrency_limit: int
    collision_strategy: str = "ENQUEUE"
    parameters: dict[str, Any] = field(default_factory=dict)


SPECS: dict[str, Spec] = {
    "process-plate": Spec(
        "prefect_hcs.runtime.flow:process_plate",
        "flows/process_plate.py:process_plate",
        ("hcs", "hcs-plate"),
        4,
        parameters={"pipeline": "demo"},
    ),
    "process-screen": Spec(
        "prefect_hcs.runtime.screen:process_screen",
        "flows/process_screen.py:process_screen",
        ("hcs", "hcs-screen"),
        2,
        parameters={"pipeline": "demo"},
    ),
    "watch-plates": Spec(
        "prefect_hcs.runtime.watch:watch_plates",
        "flows/watch_plates.py:watch_plates",
        ("hcs", "hcs-watch"),
        1,
        collision_strategy="CANCEL_NEW",
        parameters={"pipeline": "demo"},
    ),
}


def _flow(spec: Spec) -> Any:
    import importlib

    module, attr = spec.flow.split(":")
    return getattr(importlib.import_module(module), attr)


def build_deployments(
    name: str = DEPLOYMENT_NAME,
    *,
    watch_folder: str | None = None,
    watch_cron: str = WATCH_CRON,
    defaults: dict[str, Any] | None = None,
) -> list[Any]:
    """RunnerDeployments for `serve`: the plate and screen flows, and the watch flow.

    The watch deployment gets its cron schedule only with a `watch_folder` (a scheduled run
    without a folder could only fail). `defaults` are default parameters of every deployment
    (e.g. {"global_config": "facility-default"}); screen and watch also default
    `plate_deployment` to this name's process-plate deployment. Defaults that look like secrets
    are refused (`SecretParameterError`) before anything is registered; the flows' parameter
    schema makes the server refuse such values in the runs it creates.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import EntrypointType

    from prefect_hcs.runtime.guard import check_parameters

    check_parameters({**(defaults or {}), "folder": watch_folder})  # defaults are stored too
    out = []
    for flow_name, spec in SPECS.items():
        params = {**spec.parameters, **(defaults or {})}
        if flow_name != "process-plate":
            params.setdefault("plate_deployment", f"process-plate/{name}")
        schedule: dict[str, Any] = {}
        if flow_name == "watch-plates" and watch_folder:
            params["folder"] = watch_folder
            schedule = {"cron": watch_cron}
        out.append(
            _flow(spec).to_deployment(
                name,
                tags=list(spec.tags),
                parameters=params,
                concurrency_limit=ConcurrencyLimitConfig(
                    limit=spec.concurrency_limit, collision_strategy=spec.collision_strategy
                ),
                entrypoint_type=EntrypointType.MODULE_PATH,
                **schedule,
            )
        )
    return out


def serve_all(
    name: str = DEPLOYMENT_NAME,
    *,
    watch_folder: str | None = None,
    watch_cron: str = WATCH_CRON,
    defaults: dict[str, Any] | None = None,
    limit: int | None = None,
) -> None:
    """Register and run the deployments in this process until interrupted (blocks)."""
    from prefect import serve

    serve(
        *build_deployments(
            name, watch_folder=watch_folder, watch_cron=watch_cron, defaults=defaults
        ),
        limit=limit,
    )
