"""Names, links and events of a plate run in the Prefect UI: artifact keys, redacted URLs,
flow-run tags and `prefect-hcs.*` events. Best effort: a failing call logs a warning.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from prefect import get_run_logger
from prefect.events import emit_event

EVENT_PREFIX = "prefect-hcs"
#: Optional OMERO.web base URL (e.g. https://omero.example.org) for clickable OMERO links.
OMERO_WEB_ENV = "PREFECT_HCS_OMERO_WEB_URL"

F = TypeVar("F", bound=Callable[..., Any])


def best_effort(fn: F) -> F:
    """Monitoring must never fail a plate: log a warning instead of raising."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any API or rendering problem
            get_run_logger().warning("monitoring: %s failed: %s", fn.__name__, exc)
            return None

    return wrapper  # type: ignore[return-value]


def slug(text: str) -> str:
    """An artifact key: lowercase letters, digits and dashes only (what Prefect accepts)."""
    out = "".join(c.lower() if c.isascii() and c.isalnum() else "-" for c in text)
    return "-".join(p for p in out.split("-") if p)[:60] or "plate"


def artifact_key(kind: str, plate_id: str) -> str:
    """`<kind>-<plate>`: versioned by key, so the Artifacts page shows a plate's history."""
    return slug(f"{kind}-{plate_id}")


def plate_id_from_url(url: str) -> str:
    """The plate's name before compilation (what the flow-run name uses)."""
    return str(url).rstrip("/").rsplit("/", 1)[-1] or "plate"


def redact_url(url: str) -> str:
    """A URL without user:password@ (never put credentials into events or artifacts)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def browsable(url: str) -> str:
    """A link the UI can show: local paths become file:// URIs, other URLs stay as they are."""
    if "://" in url:
        return redact_url(url)
    return Path(url).resolve().as_uri()


def plate_resource(plate_id: str, plate_url: str) -> dict[str, str]:
    """The plate as a Prefect event resource (URL without credentials), for automations."""
    return {
        "prefect.resource.id": f"{EVENT_PREFIX}.plate.{plate_id}",
        "prefect.resource.name": plate_id,
        "prefect-hcs.plate.url": redact_url(plate_url),
    }


def flow_run_related() -> list[dict[str, str]]:
    """The current flow run as a related resource (Prefect adds it too; explicit is clearer)."""
    from prefect.runtime import flow_run

    if not flow_run.id:
        return []
    return [
        {
            "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
            "prefect.resource.role": "flow-run",
            "prefect.resource.name": str(flow_run.name or ""),
        }
    ]


@best_effort
def tag_flow_run(*tags: str) -> list[str]:
    """Add tags to the current flow run (merged with its own, e.g. a deployment's tags)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    merged = list(dict.fromkeys([*(flow_run.tags or []), *tags]))
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=merged)
    return merged


@best_effort
def emit(kind: str, plate_id: str, plate_url: str, payload: dict[str, Any]) -> None:
    """Emit `prefect-hcs.<kind>` about the plate, related to the current flow run."""
    emit_event(
        f"{EVENT_PREFIX}.{kind}",
        resource=plate_resource(plate_id, plate_url),
        related=flow_run_related(),
        payload={"plate": plate_id, **payload},
    )


def short_reason(text: str, limit: int = 500) -> str:
    """One line of at most ``limit`` characters, for artifacts and event payloads."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def omero_link(plate_url: str) -> str:
    """OMERO.web's plate page when a base URL is configured, else the `omero://` address."""
    base = os.environ.get(OMERO_WEB_ENV, "").rstrip("/")
    m = plate_url.removeprefix("omero://").split("/", 1)[0]
    number = m.removeprefix("plate_")
    if base and number.isdigit():
        return f"{base}/webclient/?show=plate-{number}"
    return redact_url(plate_url)
