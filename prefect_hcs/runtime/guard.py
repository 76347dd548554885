"""A Prefect flow that checks its call parameters for secrets before the run is created.

Calling a Prefect flow creates its flow run (and stores its parameters) before the flow body
runs, so a check inside the flow comes too late. `ParameterGuardedFlow.__call__` binds the call's
arguments exactly as Prefect does and refuses secret-looking values first; deployments are
guarded by the parameter schema instead (see `prefect_hcs.pipeline.secrets`).

Plain JSON parameters (what our flows take) are stored as they are: Prefect's own serializer
imports FastAPI (`jsonable_encoder`, 7 MB of RSS and 0.2-0.3 s) for every flow-run creation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from prefect import Flow
from prefect.utilities.callables import get_call_parameters

from prefect_hcs.pipeline.secrets import (
    SecretParameterError,
    refusal,
    secret_parameter_problems,
)


class ParameterGuardedFlow(Flow):
    """A `prefect.Flow` whose direct calls refuse secret-looking parameters up front."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Check the bound parameters, then run the flow as Prefect does."""
        call_kwargs = {k: v for k, v in kwargs.items() if k not in ("return_state", "wait_for")}
        check_parameters(get_call_parameters(self.fn, args, call_kwargs))
        return super().__call__(*args, **kwargs)

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Parameters as Prefect stores them; plain JSON values without importing FastAPI.

        Prefect's `Flow.serialize_parameters` runs FastAPI's `jsonable_encoder` on every value,
        which imports FastAPI into the flow process. For plain JSON values (str, int, float,
        bool, None, lists, tuples and str-keyed dicts of them) its result is the same value with
        tuples as lists; anything else goes through Prefect's own path.
        """
        if all(_is_plain_json(v) for v in parameters.values()):
            return {k: _plain_copy(v) for k, v in parameters.items()}
        return super().serialize_parameters(parameters)

    def with_options(self, **options: Any) -> ParameterGuardedFlow:
        """Same as `Flow.with_options`, keeping the guard."""
        new = super().with_options(**options)
        new.__class__ = ParameterGuardedFlow
        return cast(ParameterGuardedFlow, new)  # the class was just swapped


_SCALARS = (str, int, float, bool, type(None))


def _is_plain_json(value: Any, depth: int = 0) -> bool:
    """Whether `value` is plain JSON (exact builtin types, str keys), at most 50 levels deep."""
    if depth > 50:
        return False
    if type(value) in _SCALARS:
        return True
    if type(value) in (list, tuple):
        return all(_is_plain_json(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain_json(v, depth + 1) for k, v in value.items())
    return False


def _plain_copy(value: Any) -> Any:
    """A copy of a plain JSON value as `jsonable_encoder` returns it: tuples become lists."""
    if type(value) in (list, tuple):
        return [_plain_copy(v) for v in value]
    if type(value) is dict:
        return {k: _plain_copy(v) for k, v in value.items()}
    return value


def check_parameters(parameters: dict[str, Any]) -> None:
    """Raise `SecretParameterError` (naming parameter and key, never the value) if needed."""
    if problems := secret_parameter_problems(parameters):
        raise SecretParameterError(refusal(problems))


def guarded_flow(**options: Any) -> Callable[[Callable[..., Any]], ParameterGuardedFlow]:
    """Decorator like `@prefect.flow(...)` that makes a `ParameterGuardedFlow`."""

    def decorate(fn: Callable[..., Any]) -> ParameterGuardedFlow:
        return ParameterGuardedFlow(fn=fn, **options)

    return decorate
