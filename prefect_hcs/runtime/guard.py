"""A Prefect flow that checks its call parameters for secrets before the run is created.

Calling a Prefect flow creates its flow run (and stores its parameters) before the flow body
runs, so a check inside the flow comes too late. `ParameterGuardedFlow.__call__` binds the call's
arguments exactly as Prefect does and refuses secret-looking values first; deployments are
guarded by the parameter schema instead (see `prefect_hcs.pipeline.secrets`).
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

    def with_options(self, **options: Any) -> ParameterGuardedFlow:
        """Same as `Flow.with_options`, keeping the guard."""
        new = super().with_options(**options)
        new.__class__ = ParameterGuardedFlow
        return cast(ParameterGuardedFlow, new)  # the class was just swapped


def check_parameters(parameters: dict[str, Any]) -> None:
    """Raise `SecretParameterError` (naming parameter and key, never the value) if needed."""
    if problems := secret_parameter_problems(parameters):
        raise SecretParameterError(refusal(problems))


def guarded_flow(**options: Any) -> Callable[[Callable[..., Any]], ParameterGuardedFlow]:
    """Decorator like `@prefect.flow(...)` that makes a `ParameterGuardedFlow`."""

    def decorate(fn: Callable[..., Any]) -> ParameterGuardedFlow:
        return ParameterGuardedFlow(fn=fn, **options)

    return decorate
