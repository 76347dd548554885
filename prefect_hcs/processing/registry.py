"""Name registry for processing functions, so pipelines written as YAML/JSON can name them.

A pipeline file says ``func: percentile_normalize`` with ``kwargs: {low: 1}``; the compiler turns the
name into a `FunctionSpec` and checks the kwargs *before any image is read* ("fail at compile time,
not at well 217"). Everything the compiler and executor need to know about a function lives in its
spec: which components it stacks along the leading axes, which plate metadata it needs injected,
and which named tables ("special outputs") it returns next to the image.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "COMPONENTS",
    "METADATA_INPUTS",
    "FunctionSpec",
    "FunctionRegistry",
    "InvalidKwargsError",
    "RegistryError",
    "UnknownFunctionError",
    "get_function",
    "list_functions",
    "register",
    "validate_kwargs",
]

#: Components a step can stack along the leading axes (the names used by the plate layout).
COMPONENTS: frozenset[str] = frozenset({"site", "channel", "z", "timepoint"})

#: Values the executor injects from the plate layout; users may never pass these in kwargs.
#: grid: (rows, cols); overlap: fraction in [0, 1); pixel_size_um: float | None;
#: channel_names: dict[int, str]; site_positions_px: one nominal (y, x) per site of the well,
#: in pixels, from the stage positions (None when the plate records none).
METADATA_INPUTS: frozenset[str] = frozenset(
    {"grid", "overlap", "pixel_size_um", "channel_names", "site_positions_px"}
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


def _build_spec(
    func: Callable[..., Any],
    name: str,
    variable_components: tuple[str, ...],
    metadata_inputs: tuple[str, ...],
    special_outputs: tuple[str, ...],
    description: str | None,
    validator: Callable[[dict[str, Any]], None] | None,
) -> FunctionSpec:
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


# --- type checking of kwargs -------------------------------------------------------------------


def _type_error(value: Any, annotation: Any) -> str | None:
    """Why ``value`` does not fit ``annotation``, or None if it fits (or cannot be checked).

    Only the simple types a YAML/JSON pipeline can express are checked: int, float, str, bool,
    None, tuple, list, Sequence, dict, Literal and unions of those. Anything else is accepted.
    """
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin in (typing.Union, types.UnionType):
        errors = [_type_error(value, a) for a in args]
        if any(e is None for e in errors):
            return None
        return f"expected {_type_name(annotation)}, got {_value_desc(value)}"
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
            return f"expected {_type_name(annotation)}, got {_value_desc(value)}"
        if not args:
            return None
        if container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return f"expected {len(args)} items ({_type_name(annotation)}), got {len(value)}"
            item_types = list(args)
        else:
            item_types = [args[0]] * len(value)
        for i, (item, t) in enumerate(zip(value, item_types, strict=True)):
            if err := _type_error(item, t):
                return f"item {i}: {err}"
        return None
    if container in (dict, Mapping) or container is typing.Mapping:
        if not isinstance(value, Mapping):
            return f"expected a mapping, got {_value_desc(value)}"
        return None
    return None


def _type_name(annotation: Any) -> str:
    """Readable annotation: ``'otsu' | 'li' | float``, ``int | None``, ``Sequence[float]``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None) or annotation is None:
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{base}[{inner}]" if args else base
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _value_desc(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _describe_params(spec: FunctionSpec) -> str:
    parts = []
    for p in spec.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        s = p.name
        if p.annotation is not inspect.Parameter.empty:
            s += f": {_type_name(p.annotation)}"
        if p.default is not inspect.Parameter.empty:
            s += f" = {p.default!r}"
        parts.append(s)
    return ", ".join(parts) if parts else "(none)"


# --- the registry ------------------------------------------------------------------------------


class FunctionRegistry:
    """A set of named processing functions. The module-level functions use one default instance."""

    def __init__(self) -> None:
        self._specs: dict[str, FunctionSpec] = {}

    def register(
        self,
        name: str | None = None,
        *,
        variable_components: tuple[str, ...] = ("site",),
        metadata_inputs: tuple[str, ...] = (),
        special_outputs: tuple[str, ...] = (),
        description: str | None = None,
        validator: Callable[[dict[str, Any]], None] | None = None,
        reduces: tuple[str, ...] = (),
        version: str = "",
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a function under ``name`` (default: its ``__name__``).

        ``version`` identifies the code for resume (default: a hash of the function's source).
        """

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            fname = name or func.__name__
            spec = _build_spec(
                func,
                fname,
                variable_components,
                metadata_inputs,
                special_outputs,
                description,
                validator,
            )
            spec = dataclasses.replace(spec, reduces=tuple(reduces), version=str(version))
            old = self._specs.get(fname)
            same = old is not None and (
                (old.func.__module__, old.func.__qualname__) == (func.__module__, func.__qualname__)
            )
            if old is not None and not same:  # a module reload re-registers the same function
                raise RegistryError(
                    f"processing function name {fname!r} is already registered by "
                    f"{old.func.__module__}.{old.func.__qualname__}"
                )
            self._specs[fname] = spec
            func.__hcs_spec__ = spec  # type: ignore[attr-defined]
            return func

        return decorate

    def get(self, name: str) -> FunctionSpec:
        """The spec registered as ``name``; the error suggests close matches."""
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            pass
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownFunctionError(
            f"unknown processing function {name!r}.{hint} Available: {', '.join(names)}"
        )

    def names(self) -> list[str]:
        return sorted(self._specs)

    def validate(self, name: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check ``kwargs`` for function ``name``; return them as a new dict.

        Raises `InvalidKwargsError` naming the function, every offending kwarg and the accepted
        ones: unknown names, metadata inputs (the executor injects those from the plate layout),
        missing required parameters, values of the wrong simple type, and value-range errors from
        the spec's validator. Values are returned unchanged: the plan keeps what the user wrote.
        """
        spec = self.get(name)
        kwargs = dict(kwargs or {})
        if bad_keys := [k for k in kwargs if not isinstance(k, str)]:
            raise InvalidKwargsError(f"{name}: kwarg names must be strings, got {bad_keys!r}")
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in spec.parameters.values())
        problems: list[str] = []

        if meta := sorted(k for k in kwargs if k in METADATA_INPUTS):
            problems.append(
                f"{', '.join(meta)}: metadata input(s) taken from the plate layout, "
                f"do not set them in kwargs"
            )
        if not accepts_any:
            unknown = sorted(k for k in kwargs if k not in spec.parameters and k not in meta)
            for k in unknown:
                close = difflib.get_close_matches(k, list(spec.parameters), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{k}: unknown kwarg{hint}")
        for pname, p in spec.parameters.items():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                continue
            if pname not in kwargs:
                if p.default is inspect.Parameter.empty:
                    problems.append(f"{pname}: required kwarg is missing")
                continue
            if err := _type_error(kwargs[pname], p.annotation):
                problems.append(f"{pname}: {err}")
        if not problems and spec.validator is not None:
            try:
                spec.validator({**spec.defaults(), **kwargs})
            except (ValueError, TypeError) as exc:
                problems.append(str(exc))
        if problems:
            raise InvalidKwargsError(
                f"invalid kwargs for processing function {name!r}: "
                + "; ".join(problems)
                + f". Accepted kwargs: {_describe_params(spec)}"
            )
        return kwargs


_DEFAULT = FunctionRegistry()


def register(
    name: str | None = None,
    *,
    variable_components: tuple[str, ...] = ("site",),
    metadata_inputs: tuple[str, ...] = (),
    special_outputs: tuple[str, ...] = (),
    description: str | None = None,
    validator: Callable[[dict[str, Any]], None] | None = None,
    reduces: tuple[str, ...] = (),
    version: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a processing function in the default registry (decorator; returns ``func``)."""
    return _DEFAULT.register(
        name,
        variable_components=variable_components,
        metadata_inputs=metadata_inputs,
        special_outputs=special_outputs,
        description=description,
        validator=validator,
        reduces=reduces,
        version=version,
    )


def get_function(name: str) -> FunctionSpec:
    """The spec of the registered function ``name`` (raises `UnknownFunctionError`)."""
    return _DEFAULT.get(name)


def list_functions() -> list[str]:
    """Sorted names of all registered functions."""
    return _DEFAULT.names()


def validate_kwargs(name: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check user kwargs for ``name`` and return them as a new dict (raises `InvalidKwargsError`)."""
    return _DEFAULT.validate(name, kwargs)
