"""The test-only hook that lets a process reach OMERO stand-ins: `install_standin`.

After `install_standin()`, a login whose host is ``standin:<folder>`` (`standin_host`,
`standin_options`) is served by the stand-in in that folder; every other login goes where it went
before. Nothing in the product calls it, so no storage option or credentials block can point a
production run at a stand-in. Tests install it in their own process (``tests/conftest.py``) and,
through ``tests/standin_site/sitecustomize.py``, in every Python process they start; the demo
installs it itself. Cheap to import: the stand-in is loaded on the first stand-in login.
"""

from __future__ import annotations

import os
from typing import Any

from prefect_hcs.storage.omero_hook import (
    GatewayFactory,
    gateway_factory,
    install_gateway_factory,
)

__all__ = ["HOST_PREFIX", "install_standin", "standin_host", "standin_options", "uninstall_standin"]

#: Host prefix of logins served by the stand-in once `install_standin` ran: ``standin:<folder>``.
HOST_PREFIX = "standin:"


def standin_host(directory: str | os.PathLike[str]) -> str:
    """The OMERO host name that means "the stand-in in `directory`" (after `install_standin`)."""
    return HOST_PREFIX + os.path.abspath(directory)


def standin_options(directory: str | os.PathLike[str], user: str, **extra: Any) -> dict[str, Any]:
    """``omero://`` storage options logging in to the stand-in in `directory` as `user`.

    `extra` adds ``group``, ``password``, ``retries`` and the like. JSON-able, so a run's
    parameters can carry them to any process that ran `install_standin`.
    """
    return {"host": standin_host(directory), "user": user, **extra}


class _StandinFactory:
    """Serves ``standin:<folder>`` logins from the stand-in, every other login as before."""

    def __init__(self, fallback: GatewayFactory | None) -> None:
        self.fallback = fallback

    def __call__(self, login: Any) -> Any:
        if not login.host.startswith(HOST_PREFIX):
            if self.fallback is not None:
                return self.fallback(login)
            from prefect_hcs.storage.omero_login import blitz_adapter

            return blitz_adapter(login)
        from prefect_hcs.testing.standin_adapter import StandinAdapter

        directory = login.host[len(HOST_PREFIX) :]
        return StandinAdapter(directory, login.username, login.password, group=login.group)


def install_standin() -> None:
    """Let this process reach OMERO stand-ins through ``standin:<folder>`` hosts (idempotent)."""
    current = gateway_factory()
    if not isinstance(current, _StandinFactory):
        install_gateway_factory(_StandinFactory(current))


def uninstall_standin() -> None:
    """Undo `install_standin`: logins go to the factory that was there before it."""
    current = gateway_factory()
    if isinstance(current, _StandinFactory):
        install_gateway_factory(current.fallback)
