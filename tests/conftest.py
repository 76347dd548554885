"""Test session setup: an isolated Prefect home and one real `prefect server start` per session.

The server is started lazily by the `prefect_server` fixture (only tests that talk to the API pay
the ~10 s start-up), bound to 127.0.0.1 with SQLite under a temporary PREFECT_HOME.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="prefect-hcs-tests-"))
# Set before anything imports prefect, so no test writes to the developer's ~/.prefect.
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "client-home")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
# Never fall back silently to an ephemeral in-process API: a test that talks to Prefect must ask
# for the `prefect_server` fixture.
os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
# The OMERO stand-in is a test double the product cannot reach by configuration: install its hook
# here and, through `standin_site/sitecustomize.py`, in every Python process the tests start
# (served deployments, flow-run subprocesses, CLI calls).
_STANDIN_SITE = str(Path(__file__).resolve().parent / "standin_site")
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_STANDIN_SITE, os.environ.get("PYTHONPATH")) if p
)
from prefect_hcs.testing.standin_hook import install_standin  # noqa: E402

install_standin()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """API URL of a real Prefect server shared by the session; PREFECT_API_URL points at it."""
    from prefect_hcs.runtime.server import start_server

    server = start_server(_SESSION_HOME / "server-home")
    os.environ["PREFECT_API_URL"] = server.api_url  # for subprocesses
    # Prefect may already have read its settings (a test module imported it at collection time),
    # so also override the in-process settings for the rest of the session.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        server.stop()
        os.environ.pop("PREFECT_API_URL", None)


# Never fall back silently to an ephemeral in-process API: a test that talks to Prefect must ask
# for the `prefect_server` fixture.
os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
