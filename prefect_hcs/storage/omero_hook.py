"""The one hook that puts another OMERO gateway behind logins, for tests and the demo.

`install_gateway_factory(factory)` makes every later `OmeroLogin.adapter()` in this process call
`factory(login)` instead of connecting to a real server through omero-py; nothing in the product
installs one, so no configuration value can reach a test double. This module imports nothing
heavy, so a test harness can install a factory when an interpreter starts (see
``tests/standin_site/sitecustomize.py``) at no cost to processes that never log in to OMERO.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["GatewayFactory", "gateway_factory", "install_gateway_factory"]

#: Makes an adapter (`omero_gateway.OmeroAdapter`) for a login (`omero_login.OmeroLogin`).
GatewayFactory = Callable[[Any], Any]

_FACTORY: list[GatewayFactory | None] = [None]
_LOCK = threading.Lock()


def gateway_factory() -> GatewayFactory | None:
    """The factory installed in this process, or None: logins then use the real server."""
    return _FACTORY[0]


def install_gateway_factory(factory: GatewayFactory | None) -> GatewayFactory | None:
    """Make every later login in this process use `factory` (None: the real server again).

    Returns the factory it replaced, so that a caller can put it back. Filesystem sessions are
    keyed by the factory too, so a change never reuses another factory's adapter.
    """
    with _LOCK:
        previous = _FACTORY[0]
        _FACTORY[0] = factory
    return previous
