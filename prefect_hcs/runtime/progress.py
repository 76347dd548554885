"""A tiny in-process hook so a terminal can show progress of a flow running in the same process."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

Listener = Callable[[dict[str, Any]], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def emit(event: dict[str, Any]) -> None:
    for listener in list(_listeners):
        with contextlib.suppress(Exception):  # a display problem must never break a run
            listener(event)
