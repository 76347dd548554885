"""Make sure a Prefect API is reachable for a CLI run: the configured one, ours, or a new one.

Order: `PREFECT_API_URL` from the environment (must answer), then a server this tool started
earlier (recorded in `<PREFECT_HOME>/prefect-hcs-server.json`), else start `prefect server
start` on 127.0.0.1 with SQLite under the Prefect home and leave it running for the UI.
Nothing here imports Prefect, so the environment is settled before Prefect reads its settings.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from prefect_hcs.errors import UserFacingError
from prefect_hcs.runtime.server import api_healthy, free_port, start_server

RECORD = "prefect-hcs-server.json"


@dataclass(frozen=True)
class Api:
    url: str
    started_now: bool
    pid: int | None = None
    log: str | None = None

    @property
    def ui_url(self) -> str:
        return self.url.removesuffix("/api")


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ensure_api() -> Api:
    """Return a healthy API and export it as PREFECT_API_URL for this process."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        if not api_healthy(configured, timeout=5):
            raise UserFacingError(
                f"PREFECT_API_URL={configured} does not answer /health. Start that server, or "
                "unset PREFECT_API_URL to let prefect-hcs start a local one."
            )
        return Api(configured, False)
    home = prefect_home()
    record = home / RECORD
    if record.exists():
        try:
            data = json.loads(record.read_text())
            if api_healthy(data["api_url"], timeout=3):
                os.environ["PREFECT_API_URL"] = data["api_url"]
                return Api(data["api_url"], False, data.get("pid"), data.get("log"))
        except (OSError, ValueError, KeyError):
            pass
    port = 4200 if _port_free(4200) else free_port()
    server = start_server(home, port, detach=True)
    record.write_text(
        json.dumps({"api_url": server.api_url, "pid": server.pid, "log": str(server.log_path)})
    )
    os.environ["PREFECT_API_URL"] = server.api_url
    return Api(server.api_url, True, server.pid, str(server.log_path))
