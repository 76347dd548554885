"""Find the Prefect API the way Prefect does; otherwise reuse or start the one local server.

Every command that talks to Prefect (`run`, `demo`, `plan`/`config explain` with block names,
`blocks apply`, `retry-failed`, `serve`) calls `ensure_api` first:

1. **Prefect's own settings**, read by Prefect itself: `PREFECT_API_URL` from the environment,
   then `.env` / `prefect.toml`, then the active profile (`prefect config set PREFECT_API_URL=…`,
   `prefect profile use …`, `prefect cloud login`). The API key (`PREFECT_API_KEY`) or auth string
   is sent by Prefect's client and is never printed. The API must answer `/health`.
2. **The local server this tool started before** (recorded in
   `<PREFECT_HOME>/prefect-hcs-server.json`), if it still answers.
3. Otherwise **start** `prefect server start` on 127.0.0.1 (SQLite under `PREFECT_HOME`), on the
   port given by `--server-port`, else Prefect's `PREFECT_SERVER_API_PORT` setting, else 4200.
   A port that was asked for and is busy is an error naming the fix; a busy default port gives
   way to a free one. A file lock makes concurrent commands share one server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prefect_hcs.errors import UserFacingError
from prefect_hcs.runtime.server import api_healthy, free_port, start_server

RECORD = "prefect-hcs-server.json"
LOCK = "prefect-hcs-server.lock"
DEFAULT_PORT = 4200

_requested_port: int | None = None


class ApiUnreachableError(UserFacingError):
    """The Prefect API configured in Prefect's settings does not answer (or refuses the key)."""


class ServerPortBusyError(UserFacingError):
    """The port asked for the local Prefect server is taken by another program."""


@dataclass(frozen=True)
class Api:
    """A reachable Prefect API and how it was found."""

    url: str
    started_now: bool
    pid: int | None = None
    log: str | None = None
    source: str = "local server"
    ui: str | None = None

    @property
    def ui_url(self) -> str:
        """Base URL of the UI (Prefect Cloud's app URL for Cloud workspaces)."""
        return self.ui or self.url.removesuffix("/api")


def set_requested_port(port: int | None) -> None:
    """The `--server-port` option: the port a local server is started on (this process)."""
    global _requested_port
    _requested_port = port


def prefect_home() -> Path:
    """Prefect's home folder (`PREFECT_HOME`, default ~/.prefect), as Prefect resolves it."""
    from prefect.settings import Settings

    return Path(Settings().home).expanduser()


def ensure_api() -> Api:
    """Return a healthy API and make it this process's (and its children's) Prefect API."""
    configured = _configured_api()
    if configured is not None:
        return configured
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / LOCK):
        port, origin = _server_port()
        api = _recorded_server(home, port) or _start_local(home, port, origin)
    _use_api(api.url)
    return api


# ---------------------------------------------------------------------------- configured API
def _configured_api() -> Api | None:
    """The API in Prefect's settings (environment, settings files, active profile), checked."""
    from prefect.settings import Settings

    settings = Settings()
    url = settings.api.url
    if not url:
        return None
    source = _url_source()
    problem = _health_problem()
    if problem:
        raise ApiUnreachableError(
            f"the Prefect API {url} (PREFECT_API_URL from {source}) {problem}. Start that server "
            "or fix the setting (`prefect config set PREFECT_API_URL=…`, or `prefect config unset "
            "PREFECT_API_URL` to let prefect-hcs start a local server)"
        )
    _use_api(url)
    return Api(url, False, source=source, ui=settings.ui_url)


def _url_source() -> str:
    """Where PREFECT_API_URL came from, for messages (never its value's secrets)."""
    if os.environ.get("PREFECT_API_URL"):
        return "the environment"
    from prefect.settings import load_current_profile

    profile = load_current_profile()
    if any(s.name == "PREFECT_API_URL" for s in profile.settings):
        return f"Prefect profile {profile.name!r} in {profile.source}"
    return "Prefect's settings files (.env, prefect.toml or pyproject.toml)"


def _health_problem() -> str | None:
    """None when `/health` answers through Prefect's client (with its key), else the reason."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with (
        temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}),
        get_client(sync_client=True, httpx_settings={"timeout": 10}) as client,
    ):
        exc = client.api_healthcheck()
    if exc is None:
        return None
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        if code in (401, 403):
            return f"refused the credentials (HTTP {code}); check PREFECT_API_KEY"
        return f"answered /health with HTTP {code}"
    return f"does not answer ({type(exc).__name__})"


def _use_api(url: str) -> None:
    """Point this process (and the processes it starts) at `url`."""
    os.environ["PREFECT_API_URL"] = url
    import prefect.context

    prefect.context.refresh_global_settings_context()


# ------------------------------------------------------------------------------ local server
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` so concurrent commands start one server, not several."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _server_port() -> tuple[int | None, str | None]:
    """(port, where it was asked for) — (None, None) when nothing asked for a port."""
    if _requested_port:
        return _requested_port, "--server-port"
    from prefect.settings import Settings

    api = Settings().server.api
    if "port" in api.model_fields_set:
        return int(api.port), "PREFECT_SERVER_API_PORT"
    return None, None


def _recorded_server(home: Path, port: int | None) -> Api | None:
    """The server this tool started earlier, when it still answers (on `port`, if one is asked)."""
    try:
        data = json.loads((home / RECORD).read_text())
        url = data["api_url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if port is not None and data.get("port") != port:
        return None
    if not api_healthy(url, timeout=3):
        return None
    return Api(url, False, data.get("pid"), data.get("log"))


def _start_local(home: Path, port: int | None, origin: str | None) -> Api:
    chosen = pick_port(port or DEFAULT_PORT, origin)
    server = start_server(home, chosen, detach=True)
    record = {"api_url": server.api_url, "pid": server.pid, "log": str(server.log_path)}
    (home / RECORD).write_text(json.dumps({**record, "port": chosen}))
    return Api(server.api_url, True, server.pid, str(server.log_path))


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:`port` can be bound now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(port: int, origin: str | None) -> int:
    """`port` if free; a busy default gives way to a free port; a busy requested one is an error.

    `origin` names where the port was asked for (`--server-port`, `PREFECT_SERVER_API_PORT`),
    or is None for the default.
    """
    if port_free(port):
        return port
    if origin is None:
        return free_port()
    url = f"http://127.0.0.1:{port}/api"
    holder = (
        f"a Prefect server already answers at {url}, but no PREFECT_API_URL points at it: to use "
        f"it, `prefect config set PREFECT_API_URL={url}`"
        if api_healthy(url, timeout=3)
        else "another program holds it: stop that program"
    )
    raise ServerPortBusyError(
        f"port {port} (from {origin}) for the local Prefect server is in use; {holder}, or choose "
        "a free port with `prefect-hcs --server-port N …` or `prefect config set "
        "PREFECT_SERVER_API_PORT=N`"
    )
