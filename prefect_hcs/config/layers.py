"""Config layers: the same shape as `GlobalPipelineConfig` with every field optional.

`None` means "inherit" at every depth and on every wire (YAML, JSON, Prefect Block documents):
a layer never carries a concrete default it did not set, so a value cannot silently replace a
user's setting from another layer (the OpenHCS remote-execution bug came from exactly that).
The same class serves the global, pipeline and step layers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Annotated, Any, Literal, Optional, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from prefect_hcs.config.documents import parse_document
from prefect_hcs.config.sections import SECTIONS, ConfigSection, GlobalPipelineConfig
from prefect_hcs.errors import UserFacingError

LayerName = Literal["step", "pipeline", "global"]


class ConfigError(UserFacingError, ValueError):
    """A layer is not valid. Names the layer, where it came from, each bad field and the fix."""

    def __init__(self, layer: str, origin: str, problems: list[str]):
        self.layer = layer
        self.origin = origin
        self.problems = problems
        where = f" ({origin})" if origin else ""
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid {layer} config{where}:\n{body}")


class LazySection(BaseModel):
    """Base of the generated lazy sections: immutable, unknown fields rejected, all fields optional."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _lazy_twin(cls: type[ConfigSection]) -> type[LazySection]:
    fields: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        inner = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = (Optional[inner], Field(default=None, description=info.description))  # noqa: UP045
    lazy = create_model(f"Lazy{cls.__name__}", __base__=LazySection, **fields)
    lazy.__doc__ = f"{cls.__doc__}\n\nEvery field optional: unset (None) inherits."
    lazy.__module__ = __name__
    return lazy


LAZY_SECTIONS: dict[str, type[LazySection]] = {name: _lazy_twin(c) for name, c in SECTIONS.items()}
LazyVFSConfig = LAZY_SECTIONS["vfs_config"]
LazyPathPlanningConfig = LAZY_SECTIONS["path_planning_config"]
LazyWellFilterConfig = LAZY_SECTIONS["well_filter_config"]
LazyStepWellFilterConfig = LAZY_SECTIONS["step_well_filter_config"]
LazyStepMaterializationConfig = LAZY_SECTIONS["step_materialization_config"]
LazyZarrConfig = LAZY_SECTIONS["zarr_config"]
LazyExecutionConfig = LAZY_SECTIONS["execution_config"]
LazyLimitsConfig = LAZY_SECTIONS["limits_config"]


def _layer_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in GlobalPipelineConfig.model_fields.items():
        if name in LAZY_SECTIONS:
            fields[name] = (Optional[LAZY_SECTIONS[name]], Field(default=None))  # noqa: UP045
        else:
            inner = (
                Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            )
            fields[name] = (Optional[inner], Field(default=None, description=info.description))  # noqa: UP045
    return fields


#: Field definitions shared by `PipelineConfig` and the Prefect Blocks (same shape everywhere).
LAYER_FIELDS: dict[str, Any] = _layer_fields()

PipelineConfig = create_model(
    "PipelineConfig",
    __base__=LazySection,
    __doc__="One config layer (global, pipeline or step). Unset fields inherit.",
    **LAYER_FIELDS,
)
PipelineConfig.__module__ = __name__
#: A step's overrides have the same shape as a pipeline layer.
StepConfig = PipelineConfig


def _allowed(annotation: Any) -> list[str]:
    """Allowed enum values inside an annotation, for error messages."""
    out: list[str] = []
    stack = [annotation]
    while stack:
        a = stack.pop()
        if isinstance(a, type) and issubclass(a, Enum):
            out.extend(str(m.value) for m in a)
        elif get_origin(a) is not None or get_args(a):
            stack.extend(get_args(a))
    return out


def _field_annotation(path: tuple[Any, ...]) -> Any:
    """The concrete annotation at a dotted path of the layer shape, or None."""
    if not path:
        return None
    head = str(path[0])
    if head in SECTIONS and len(path) > 1:
        info = SECTIONS[head].model_fields.get(str(path[1]))
        return info.annotation if info else None
    info = GlobalPipelineConfig.model_fields.get(head)
    return info.annotation if info else None


def _known_fields(path: tuple[Any, ...]) -> list[str]:
    if len(path) >= 2 and str(path[0]) in SECTIONS:
        return list(SECTIONS[str(path[0])].model_fields)
    return list(GlobalPipelineConfig.model_fields)


def _describe(err: Mapping[str, Any]) -> str:
    loc = err["loc"]
    clean: list[str] = []
    if loc and str(loc[0]) in GlobalPipelineConfig.model_fields:
        clean.append(str(loc[0]))
        if str(loc[0]) in SECTIONS and len(loc) > 1:
            clean.append(str(loc[1]))
    elif loc:
        clean.append(str(loc[0]))
    path = ".".join(clean) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = ", ".join(_known_fields(tuple(clean)))
        return f"{path}: unknown field. Known fields here: {known}."
    allowed = _allowed(_field_annotation(tuple(clean)))
    if kind == "enum" or (allowed and "enum" in kind):
        return f"{path}: {err['input']!r} is not allowed. Allowed values: {', '.join(allowed)}."
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{path}: expected a mapping of fields, got {type(err['input']).__name__}."
    hint = f" Allowed values: {', '.join(allowed)}." if allowed else ""
    return f"{path}: {err['msg']} (got {err['input']!r}).{hint}"


def _problems(errors: Sequence[Mapping[str, Any]]) -> list[str]:
    """One message per field: a value failing every branch of a union becomes one line."""
    by_path: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for err in errors:
        key = tuple(str(p) for p in err["loc"][:2])
        by_path.setdefault(key, []).append(err)
    out: list[str] = []
    for errs in by_path.values():
        if len(errs) > 1 and len(errs[0]["loc"]) > 2:
            branches = ", ".join(str(e["loc"][2]) for e in errs)
            path = ".".join(str(p) for p in errs[0]["loc"][:2])
            out.append(f"{path}: {errs[0]['input']!r} is none of the accepted types ({branches}).")
        else:
            out.extend(_describe(e) for e in errs)
    return list(dict.fromkeys(out))


def load_layer(data: Any, *, layer: LayerName, origin: str = "") -> BaseModel:
    """Validate one layer from plain data (parsed YAML/JSON); `None`/{} is an empty layer."""
    if data is None:
        data = {}
    if isinstance(data, BaseModel):
        data = data.model_dump(exclude_none=True)
    if not isinstance(data, dict):
        raise ConfigError(
            layer,
            origin,
            [
                f"expected a mapping of config sections (e.g. 'vfs_config:'), got {type(data).__name__}"
            ],
        )
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc.errors())
        raise ConfigError(layer, origin, problems) from None


def load_layer_yaml(text: str, *, layer: LayerName, origin: str = "") -> BaseModel:
    """Parse YAML text and validate it as a layer."""
    try:
        data = parse_document(text, f"{layer} config {origin}".strip())
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(layer, origin, [f"not valid YAML: {exc}"]) from None
    return load_layer(data, layer=layer, origin=origin)


def layer_from_config(config: GlobalPipelineConfig) -> BaseModel:
    """A layer holding only what was explicitly set on a concrete config object (in-process only)."""
    return load_layer(config.model_dump(exclude_unset=True), layer="global", origin="python object")
