"""Start and find a real local Prefect server (SQLite under a Prefect home, bound to 127.0.0.1).

An ephemeral in-process API loses task-run records when the process exits, so the demo and the
tests run against a real `prefect server start` and leave it reachable for the UI.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port free right now (the OS picks it, so parallel servers do not clash)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers ``/health``; any network error is just "no"."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def server_env(home: Path, port: int, database_url: str | None = None) -> dict[str, str]:
    """Environment for a server subprocess: own home, UI pointed at the right API, no telemetry."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
    )
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    return env


def _prefect_executable() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("prefect")
    if found:
        return [found]
    raise RuntimeError("the `prefect` command is not installed next to this Python")


@dataclass
class LocalServer:
    """A `prefect server start` subprocess."""

    api_url: str
    home: Path
    process: subprocess.Popen | None
    log_path: Path
    pid: int | None = None

    @property
    def ui_url(self) -> str:
        """The UI's base URL (the API URL without ``/api``), for links printed to the user."""
        return self.api_url.removesuffix("/api")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server's whole process group, SIGKILL after ``timeout`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def start_server(
    home: Path,
    port: int | None = None,
    *,
    database_url: str | None = None,
    timeout: float = 90.0,
    detach: bool = False,
) -> LocalServer:
    """Start `prefect server start` on 127.0.0.1 and wait until `/api/health` answers."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log_path = home / "server.log"
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [*_prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env(home, port, database_url),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"prefect server exited with {proc.returncode}; log tail:\n{tail}")
        if api_healthy(api_url):
            server = LocalServer(api_url, home, None if detach else proc, log_path)
            server.pid = proc.pid
            return server
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError(
        f"prefect server did not become healthy within {timeout:.0f} s; see {log_path}"
    )
