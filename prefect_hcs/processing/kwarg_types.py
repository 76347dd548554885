"""Checking kwargs written in a pipeline file against a processing function's annotations.

A YAML/JSON pipeline can only express simple values, so only the types it can write are checked
(int, float, str, bool, None, sequences, mappings, Literal and unions of those); the messages name
the expected type the way the function's signature reads (`type_name`).
"""

from __future__ import annotations

import inspect
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from .function_spec import FunctionSpec

__all__ = ["describe_params", "type_error", "type_name"]


def type_error(value: Any, annotation: Any) -> str | None:
    """Why ``value`` does not fit ``annotation``, or None if it fits (or cannot be checked).

    Only the simple types a YAML/JSON pipeline can express are checked: int, float, str, bool,
    None, tuple, list, Sequence, dict, Literal and unions of those. Anything else is accepted.
    """
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin in (typing.Union, types.UnionType):
        errors = [type_error(value, a) for a in args]
        if any(e is None for e in errors):
            return None
        return f"expected {type_name(annotation)}, got {_value_desc(value)}"
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return None
        return f"expected one of {list(args)}, got {_value_desc(value)}"
    if annotation is type(None) or annotation is None:
        return None if value is None else f"expected None, got {_value_desc(value)}"
    if annotation is bool:
        ok = isinstance(value, (bool, np.bool_))
        return None if ok else f"expected bool, got {_value_desc(value)}"
    if annotation is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return None if ok else f"expected int, got {_value_desc(value)}"
    if annotation is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return None if ok else f"expected float, got {_value_desc(value)}"
    if annotation is str:
        return None if isinstance(value, str) else f"expected str, got {_value_desc(value)}"

    container = origin or annotation
    if container in (tuple, list, Sequence) or container is typing.Sequence:
        # JSON and YAML have no tuples: a list is accepted wherever a tuple is expected.
        if not isinstance(value, (list, tuple)):
            return f"expected {type_name(annotation)}, got {_value_desc(value)}"
        if not args:
            return None
        if container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return f"expected {len(args)} items ({type_name(annotation)}), got {len(value)}"
            item_types = list(args)
        else:
            item_types = [args[0]] * len(value)
        for i, (item, t) in enumerate(zip(value, item_types, strict=True)):
            if err := type_error(item, t):
                return f"item {i}: {err}"
        return None
    if container in (dict, Mapping) or container is typing.Mapping:
        if not isinstance(value, Mapping):
            return f"expected a mapping, got {_value_desc(value)}"
        return None
    return None


def type_name(annotation: Any) -> str:
    """Readable annotation: ``'otsu' | 'li' | float``, ``int | None``, ``Sequence[float]``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None) or annotation is None:
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{base}[{inner}]" if args else base
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _value_desc(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def describe_params(spec: FunctionSpec) -> str:
    """The user parameters of ``spec`` as a signature, e.g. ``low: float = 1.0, high: float = 99.0``."""
    parts = []
    for p in spec.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        s = p.name
        if p.annotation is not inspect.Parameter.empty:
            s += f": {type_name(p.annotation)}"
        if p.default is not inspect.Parameter.empty:
            s += f" = {p.default!r}"
        parts.append(s)
    return ", ".join(parts) if parts else "(none)"
