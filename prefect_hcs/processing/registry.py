"""Name registry for processing functions, so pipelines written as YAML/JSON can name them.

A pipeline file says ``func: percentile_normalize`` with ``kwargs: {low: 1}``; the compiler turns the
name into a `FunctionSpec` and checks the kwargs *before any image is read* ("fail at compile time,
not at well 217"). Everything the compiler and executor need to know about a function lives in its
spec: which components it stacks along the leading axes, which plate metadata it needs injected,
and which named tables ("special outputs") it returns next to the image.

This module holds the registry (names, lookup, kwarg validation). The spec, the declaration
constants and the errors live in `function_spec` and the type checks of kwargs in `kwarg_types`;
``COMPONENTS``, ``METADATA_INPUTS``, ``FunctionSpec`` and the three errors are re-exported here so
``from prefect_hcs.processing.registry import ...`` keeps working.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any

from .function_spec import (
    COMPONENTS,
    METADATA_INPUTS,
    FunctionSpec,
    InvalidKwargsError,
    RegistryError,
    UnknownFunctionError,
    build_spec,
)
from .kwarg_types import describe_params, type_error

__all__ = [
    "COMPONENTS",
    "METADATA_INPUTS",
    "FunctionSpec",
    "FunctionRegistry",
    "InvalidKwargsError",
    "RegistryError",
    "UnknownFunctionError",
    "add_provider",
    "all_specs",
    "get_function",
    "list_functions",
    "register",
    "validate_kwargs",
]


def _close_names(name: str, names: list[str]) -> list[str]:
    """Close matches on the full name, or on the last dotted part ('gaussian' finds
    'skimage.filters.gaussian')."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    short: dict[str, list[str]] = {}
    for n in names:
        short.setdefault(n.rsplit(".", 1)[-1], []).append(n)
    last = name.rsplit(".", 1)[-1]
    for s in difflib.get_close_matches(last, list(short), n=3, cutoff=0.75):
        close.extend(short[s])
    return list(dict.fromkeys(close))[:5]


class FunctionRegistry:
    """A set of named processing functions. The module-level functions use one default instance."""

    def __init__(self) -> None:
        self._specs: dict[str, FunctionSpec] = {}
        self._providers: list[Callable[[], None]] = []

    def add_provider(self, provider: Callable[[], None]) -> None:
        """Register ``provider`` to be called (once) the first time a name is not found or all
        names are listed: large third-party sets (scikit-image) register lazily, so importing
        the package and running hand-written functions stays fast."""
        self._providers.append(provider)

    def _load_providers(self) -> None:
        while self._providers:
            self._providers.pop(0)()

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
        source: str = "",
        param_docs: Mapping[str, str] | None = None,
        input_dtypes: tuple[str, ...] = (),
        version: str = "",
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a function under ``name`` (default: its ``__name__``).

        ``version`` identifies the code for resume (default: a hash of the function's source).
        ``source``, ``param_docs`` and ``input_dtypes`` describe wrapped third-party functions
        (see `skimage_functions`); hand-written functions leave them empty.
        """

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            fname = name or func.__name__
            spec = build_spec(
                func,
                fname,
                variable_components,
                metadata_inputs,
                special_outputs,
                description,
                validator,
            )
            spec = dataclasses.replace(
                spec,
                reduces=tuple(reduces),
                version=str(version),
                source=source,
                param_docs=types.MappingProxyType(dict(param_docs or {})),
                input_dtypes=tuple(input_dtypes),
            )
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
        if self._providers:
            self._load_providers()
            return self.get(name)
        names = self.names()
        close = _close_names(str(name), names)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        own = [n for n in names if not self._specs[n].source]
        wrapped = len(names) - len(own)
        more = f", and {wrapped} scikit-image functions" if wrapped else ""
        raise UnknownFunctionError(
            f"unknown processing function {name!r}.{hint} Available: {', '.join(own)}{more} "
            "(`prefect-hcs functions list` shows them all)"
        )

    def names(self) -> list[str]:
        """Sorted names of all registered functions."""
        self._load_providers()
        return sorted(self._specs)

    def specs(self) -> list[FunctionSpec]:
        """Every registered spec, sorted by name."""
        return [self._specs[n] for n in self.names()]

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
            if err := type_error(kwargs[pname], p.annotation):
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
                + f". Accepted kwargs: {describe_params(spec)}"
            )
        return kwargs


_DEFAULT = FunctionRegistry()


#: Register a processing function in the default registry (decorator; returns ``func``): the
#: default registry's `FunctionRegistry.register`, so it takes the same parameters.
register = _DEFAULT.register


def get_function(name: str) -> FunctionSpec:
    """The spec of the registered function ``name`` (raises `UnknownFunctionError`)."""
    return _DEFAULT.get(name)


def add_provider(provider: Callable[[], None]) -> None:
    """Call ``provider`` to register more functions when they are first needed (see
    `FunctionRegistry.add_provider`)."""
    _DEFAULT.add_provider(provider)


def all_specs() -> list[FunctionSpec]:
    """Every registered spec in the default registry, sorted by name."""
    return _DEFAULT.specs()


def list_functions() -> list[str]:
    """Sorted names of all registered functions."""
    return _DEFAULT.names()


def validate_kwargs(name: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check user kwargs for ``name`` and return them as a new dict (raises `InvalidKwargsError`)."""
    return _DEFAULT.validate(name, kwargs)
