"""What a registered processing function is: its `FunctionSpec`, and how one is built and checked.

`build_spec` reads a function's signature once, at registration, so that every declaration error
(a wrong first parameter, an unknown component or metadata input) fails at import time and every
user kwarg can later be checked against the resolved annotations without calling the function.
The registry itself (names, lookup, kwarg validation) is `registry`.
"""

from __future__ import annotations

import hashlib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COMPONENTS",
    "METADATA_INPUTS",
    "FunctionSpec",
    "InvalidKwargsError",
    "RegistryError",
    "UnknownFunctionError",
    "build_spec",
]

#: Components a step can stack along the leading axes (the names used by the plate layout).
COMPONENTS: frozenset[str] = frozenset({"site", "channel", "z", "timepoint"})

#: Values the executor injects from the plate layout; users may never pass these in kwargs.
#: grid: (rows, cols); overlap: fraction in [0, 1); pixel_size_um: float | None;
#: channel_names: dict[int, str]; site_positions_px: one nominal (y, x) per site of the well,
#: in pixels, from the stage positions (None when the plate records none).
#: illumination: the plate-level flat-field ({"flatfield": (C, Y, X) float32}), estimated once
#: per plate before the wells run (pipeline.plate_steps).
METADATA_INPUTS: frozenset[str] = frozenset(
    {"grid", "overlap", "pixel_size_um", "channel_names", "site_positions_px", "illumination"}
)


class RegistryError(ValueError):
    """A function cannot be registered as declared (a programming error in the function module)."""


class UnknownFunctionError(KeyError):
    """A pipeline names a function that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message, quoting it
        return str(self.args[0]) if self.args else ""


class InvalidKwargsError(TypeError):
    """A pipeline passes kwargs a registered function does not accept."""


@dataclass(frozen=True)
class FunctionSpec:
    """Everything the compiler and executor need to know about one registered function.

    ``parameters`` holds the user-settable keyword parameters (without ``stack`` and without the
    metadata inputs), with annotations resolved to real types so they can be checked.
    ``validator`` is an optional extra check of value ranges (e.g. ``low < high``) run by
    `validate_kwargs`, so that such mistakes also surface at compile time.
    """

    name: str
    func: Callable[..., Any]
    variable_components: tuple[str, ...] = ("site",)
    metadata_inputs: tuple[str, ...] = ()
    special_outputs: tuple[str, ...] = ()
    parameters: Mapping[str, inspect.Parameter] = field(default_factory=dict)
    description: str = ""
    validator: Callable[[dict[str, Any]], None] | None = None
    #: Components the function collapses to length 1, by name; "leading" = the first stacked
    #: component, whatever it is (projections, composites). The compiler tracks shapes with it.
    reduces: tuple[str, ...] = ()
    #: Where the function comes from, e.g. "skimage.filters.gaussian" (empty: this package).
    source: str = ""
    #: One-line description of each user parameter (from the docstring), for `functions show`.
    param_docs: Mapping[str, str] = field(default_factory=dict)
    #: Input dtypes the function accepts (numpy names); empty means any numeric dtype.
    input_dtypes: tuple[str, ...] = ()
    #: Declared code version; empty = a hash of the function's source (see `code_version`).
    version: str = ""

    def code_version(self) -> str:
        """What identifies this function's code for resume: the declared `version`, else a hash
        of its source (as Prefect's task-source cache policy does). A new version makes every
        well that runs the function recompute on the next run; helpers it calls are not hashed,
        so declare `version=` when they change.
        """
        if self.version:
            return self.version
        try:
            source = inspect.getsource(self.func)
        except (OSError, TypeError):
            code = getattr(self.func, "__code__", None)
            source = repr((code.co_code, code.co_consts)) if code else self.name
        return "src:" + hashlib.sha256(source.encode()).hexdigest()[:16]

    def reduced_components(self, variable_components: Sequence[str]) -> set[str]:
        """Names of the components this function collapses for a step with these components."""
        out = {c for c in self.reduces if c != "leading"}
        if "leading" in self.reduces and variable_components:
            out.add(variable_components[0])
        return out

    def defaults(self) -> dict[str, Any]:
        """The default value of every user parameter that has one."""
        return {
            n: p.default
            for n, p in self.parameters.items()
            if p.default is not inspect.Parameter.empty
        }


def _first_doc_line(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def build_spec(
    func: Callable[..., Any],
    name: str,
    variable_components: tuple[str, ...],
    metadata_inputs: tuple[str, ...],
    special_outputs: tuple[str, ...],
    description: str | None,
    validator: Callable[[dict[str, Any]], None] | None,
) -> FunctionSpec:
    """The spec of ``func`` as declared, checked (raises `RegistryError` on a declaration error).

    The user parameters are those after ``stack`` that are not metadata inputs, with their
    annotations resolved to real types so `validate_kwargs` can check values against them.
    """
    where = f"processing function {name!r} ({func.__module__}.{func.__qualname__})"
    variable_components = tuple(variable_components)
    metadata_inputs = tuple(metadata_inputs)
    special_outputs = tuple(special_outputs)
    if not variable_components:
        raise RegistryError(f"{where}: variable_components must not be empty")
    if bad := [c for c in variable_components if c not in COMPONENTS]:
        raise RegistryError(f"{where}: unknown variable components {bad}; use {sorted(COMPONENTS)}")
    if len(set(variable_components)) != len(variable_components):
        raise RegistryError(f"{where}: duplicate variable components {variable_components}")
    if bad := [m for m in metadata_inputs if m not in METADATA_INPUTS]:
        raise RegistryError(
            f"{where}: unknown metadata inputs {bad}; use {sorted(METADATA_INPUTS)}"
        )

    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    if not params or params[0].name != "stack":
        raise RegistryError(f"{where}: the first parameter must be `stack`")
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:  # unresolved forward reference: a bug in the function module
        raise RegistryError(f"{where}: cannot resolve annotations: {exc}") from exc

    user: dict[str, inspect.Parameter] = {}
    for p in params[1:]:
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            raise RegistryError(f"{where}: *{p.name} is not allowed (kwargs come from a file)")
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise RegistryError(f"{where}: positional-only parameter {p.name!r} is not allowed")
        if p.name in metadata_inputs:
            continue
        if p.name in METADATA_INPUTS:
            raise RegistryError(
                f"{where}: parameter {p.name!r} is a metadata input name; declare it in "
                f"metadata_inputs or rename it"
            )
        user[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
    if missing := [m for m in metadata_inputs if m not in sig.parameters]:
        raise RegistryError(
            f"{where}: metadata inputs {missing} are not parameters of the function"
        )

    return FunctionSpec(
        name=name,
        func=func,
        variable_components=variable_components,
        metadata_inputs=metadata_inputs,
        special_outputs=special_outputs,
        parameters=types.MappingProxyType(user),
        description=description if description is not None else _first_doc_line(func),
        validator=validator,
    )
