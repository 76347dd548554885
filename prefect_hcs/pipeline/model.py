"""Pipelines and steps as data: writable in Python, YAML or JSON with registered function names.

A step's function pattern is one of:

* a function name: ``func: max_projection``
* a function with kwargs: ``func: {name: tophat_background, kwargs: {radius: 15}}``
* a chain (applied in order): ``func: [percentile_normalize, {name: tophat_background}]``
* a mapping per value of ``group_by`` (e.g. per channel): ``func: {"1": count_nuclei}``;
  groups without an entry pass through unchanged.

Python callables are accepted when they are registered; the step stores the registered name, so a
pipeline is always plain data that can cross a deployment boundary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prefect_hcs.config.documents import check_data_size, parse_document, read_document_file
from prefect_hcs.config.layers import ConfigError, load_layer
from prefect_hcs.errors import UserFacingError
from prefect_hcs.pipeline.checks import identifier_problem

#: Package folder (next to this module) holding the built-in pipelines as YAML documents.
BUILTIN_FOLDER = "pipelines"

Component = Literal["site", "channel", "z", "timepoint"]
InputSource = Literal["previous_step", "pipeline_start"]


class PipelineError(UserFacingError, ValueError):
    """A pipeline definition is invalid (shape, names, kwargs, connections)."""


class FunctionCall(BaseModel):
    """One registered function with its keyword arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        if callable(value) and not isinstance(value, type):
            return {"name": _registered_name(value)}
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[1], dict):
            head = value[0]
            name = _registered_name(head) if callable(head) else head
            return {"name": name, "kwargs": value[1]}
        return value


Chain = tuple[FunctionCall, ...]


def _registered_name(func: Callable[..., Any]) -> str:
    from prefect_hcs.processing.registry import all_specs

    for spec in all_specs():
        if spec.func is func:
            return spec.name
    name = getattr(func, "__name__", repr(func))
    raise PipelineError(
        f"function {name!r} is not registered; decorate it with "
        f"@prefect_hcs.processing.register(...) so pipelines can refer to it by name"
    )


def _as_chain(value: Any) -> Chain:
    if isinstance(value, FunctionCall):
        return (value,)
    if isinstance(value, list) or (isinstance(value, tuple) and not _is_pair(value)):
        return tuple(FunctionCall.model_validate(v) for v in value)
    return (FunctionCall.model_validate(value),)


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and (isinstance(value[0], str) or callable(value[0]))
        and isinstance(value[1], dict)
    )


class Step(BaseModel):
    """One pipeline step: a function pattern applied to stacks of images of each well."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="", description="Unique within the pipeline; default: function name.")
    func: Chain | dict[str, Chain] = Field(description="Function pattern (see module docs).")
    variable_components: tuple[Component, ...] | None = Field(
        default=None, description="Components stacked along the leading axes; default: function's."
    )
    group_by: Component | None = Field(
        default=None, description="Component whose value selects the function of a mapping pattern."
    )
    input_source: InputSource = "previous_step"
    enabled: bool = True
    config: Any = Field(default=None, description="Step-layer config overrides (None = inherit).")

    @field_validator("func", mode="before")
    @classmethod
    def _func(cls, value: Any) -> Any:
        if isinstance(value, dict) and "name" not in value:
            if not value:
                raise ValueError("an empty mapping pattern has no function")
            return {str(k): _as_chain(v) for k, v in value.items()}
        chain = _as_chain(value)
        if not chain:
            raise ValueError("a step needs at least one function")
        return chain

    @field_validator("config", mode="before")
    @classmethod
    def _config(cls, value: Any) -> Any:
        if value is None:
            return None
        try:
            return load_layer(value, layer="step", origin="step config")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _defaults(self) -> Step:
        if not self.name:
            object.__setattr__(self, "name", self.function_names()[0])
        if problem := identifier_problem("step name", self.name):
            raise ValueError(problem)
        if isinstance(self.func, dict) and self.group_by is None:
            raise ValueError(
                "a mapping pattern needs group_by (e.g. group_by: channel) to pick its entries"
            )
        return self

    def chains(self) -> dict[str | None, Chain]:
        """{group value or None: chain}."""
        if isinstance(self.func, dict):
            return {key: chain for key, chain in self.func.items()}
        return {None: self.func}

    def function_names(self) -> list[str]:
        """Every function the step calls, in chain order, for the compiler's registry checks."""
        return [call.name for chain in self.chains().values() for call in chain]


class Pipeline(BaseModel):
    """An ordered list of steps with a name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    steps: tuple[Step, ...]

    @model_validator(mode="after")
    def _unique(self) -> Pipeline:
        names = [s.name for s in self.steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"step names must be unique; repeated: {dupes} (set `name:`)")
        if not self.steps:
            raise ValueError("a pipeline needs at least one step")
        return self

    def to_data(self) -> dict[str, Any]:
        """Plain JSON-able data (what a deployment parameter carries)."""
        return self.model_dump(mode="json", exclude_none=True)


def pipeline_from_data(data: Any, origin: str = "pipeline") -> Pipeline:
    """A `Pipeline` from parsed YAML/JSON; raises `PipelineError` with one line per problem."""
    if not isinstance(data, dict):
        raise PipelineError(
            f"{origin}: expected a mapping with `name` and `steps`, got {type(data).__name__}"
        )
    check_data_size(data, origin)
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"  - {loc or '(top level)'}: {err['msg']}")
        raise PipelineError(f"invalid pipeline ({origin}):\n" + "\n".join(lines)) from None


def builtin_pipeline_names() -> tuple[str, ...]:
    """Names of the built-in pipelines: the YAML documents shipped in `pipeline/pipelines/`."""
    folder = resources.files("prefect_hcs.pipeline") / BUILTIN_FOLDER
    return tuple(
        sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
    )


def builtin_pipeline(name: str) -> Pipeline:
    """The built-in pipeline `name` ('demo', 'demo-objects'), read from its shipped YAML."""
    resource = resources.files("prefect_hcs.pipeline") / BUILTIN_FOLDER / f"{name}.yaml"
    if not resource.is_file():
        raise PipelineError(
            f"unknown built-in pipeline {name!r}: use one of {', '.join(builtin_pipeline_names())}"
        )
    return pipeline_from_data(yaml.safe_load(resource.read_text()), f"built-in pipeline {name}")


def load_pipeline(ref: str | dict[str, Any] | Pipeline | None) -> Pipeline:
    """A pipeline from: a built-in name ('demo'), a YAML/JSON file path, a YAML/JSON document
    string, a mapping, or a Pipeline. None → the demo pipeline."""
    if ref is None:
        ref = "demo"
    if isinstance(ref, Pipeline):
        return ref
    if isinstance(ref, dict):
        return pipeline_from_data(ref)
    if ref in builtin_pipeline_names():
        return builtin_pipeline(ref)
    path = Path(ref)
    if len(ref) < 4096 and "\n" not in ref and path.suffix.lower() in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise PipelineError(f"pipeline file not found: {ref}")
        text, origin = read_document_file(path, "pipeline file"), str(path)
    elif ref.lstrip().startswith(("{", "name:", "steps:")) or "\n" in ref:
        text, origin = ref, "pipeline document"
    else:
        raise PipelineError(
            f"unknown pipeline {ref!r}: not a built-in ({', '.join(builtin_pipeline_names())}), "
            f"not a .yaml/.json file, not a YAML/JSON document"
        )
    try:
        data = parse_document(
            text, origin if origin == "pipeline document" else f"pipeline file {origin}"
        )
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PipelineError(f"{origin}: not valid YAML/JSON: {exc}") from None
    return pipeline_from_data(data, origin)
