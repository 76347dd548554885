"""A tiny in-process hook so a terminal can show progress of a flow running in the same process."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

Listener = Callable[[dict[str, Any]], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    """Call ``listener`` with every progress event of flows running in this process."""
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    """Stop calling ``listener`` (no error if it was not added)."""
    if listener in _listeners:
        _listeners.remove(listener)


def emit(event: dict[str, Any]) -> None:
    """Send an event to every listener; a failing listener is ignored so it cannot break a run."""
    for listener in list(_listeners):
        with contextlib.suppress(Exception):  # a display problem must never break a run
            listener(event)
