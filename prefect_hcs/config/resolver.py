"""Resolution of a field through the layers (X axis) and the class hierarchy (Y axis), with provenance.

For a field `f` of section class `K`, layers are visited from the most specific (step) to the most
general (global). At each layer: `K`'s own value if set; otherwise the nearest base class in `K`'s
MRO whose section at that same layer sets `f` (sibling inheritance). Only when a layer is exhausted
does the search move up. If no layer sets it, the class default applies. A field that `K` declares
again with its own default (a static override, e.g. `sub_dir = "checkpoints"`) skips the base
classes for that field only: upper layers can still set it on `K` itself, so user edits are never
lost. Resolution is a pure function of its arguments: no globals, no stack inspection, safe in any
thread or process.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel

from prefect_hcs.config.layers import LayerName
from prefect_hcs.config.sections import (
    ROOT_FIELDS,
    SECTION_OF,
    SECTIONS,
    ConfigSection,
    GlobalPipelineConfig,
)

SourceLayer = Literal["step", "pipeline", "global", "default"]
LAYER_ORDER: tuple[LayerName, ...] = ("step", "pipeline", "global")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resolved value came from."""

    layer: SourceLayer
    config_class: str
    field: str
    path: str  # dotted path where the value was found, e.g. "step_well_filter_config.well_filter"
    static_override: bool = False

    def describe(self) -> str:
        """One line for error messages and `plan` output: which layer and path set the value."""
        if self.layer == "default":
            kind = "static override" if self.static_override else "class default"
            return f"{kind} of {self.config_class}.{self.field}"
        return f"{self.layer} layer: {self.path} ({self.config_class})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the plan-config artifact and `plan --json` show provenance."""
        return {
            "layer": self.layer,
            "config_class": self.config_class,
            "field": self.field,
            "path": self.path,
            "static_override": self.static_override,
        }


@dataclass(frozen=True, slots=True)
class ResolvedValue:
    """A field's effective value together with the `Source` that explains it."""

    value: Any
    source: Source


@cache
def is_static_override(cls: type[ConfigSection], field: str) -> bool:
    """True when `cls` redeclares `field` in its own body with a default unlike its bases'."""
    if field not in cls.__dict__.get("__annotations__", {}):
        return False
    own = cls.model_fields[field].default
    return any(
        isinstance(base, type)
        and issubclass(base, ConfigSection)
        and field in base.model_fields
        and base.model_fields[field].default != own
        for base in cls.__mro__[1:]
    )


@cache
def _chain(cls: type[ConfigSection], field: str) -> tuple[tuple[str, type[ConfigSection]], ...]:
    """(section name, class) pairs to consult at one layer, most specific first."""
    if is_static_override(cls, field):
        return ((SECTION_OF[cls], cls),)
    return tuple(
        (SECTION_OF[c], c)
        for c in cls.__mro__
        if isinstance(c, type) and c in SECTION_OF and field in c.model_fields
    )


@cache
def _default_owner(cls: type[ConfigSection], field: str) -> type[ConfigSection]:
    """The class whose own body declared the default `cls` uses for `field`."""
    for c in cls.__mro__:
        if field in c.__dict__.get("__annotations__", {}):
            return c
    return cls


def _class_default(cls: type[BaseModel], field: str) -> Any:
    info = cls.model_fields[field]
    return info.get_default(call_default_factory=True)


@cache
def _default_value(section: str, field: str) -> ResolvedValue:
    """The class default of `section.field` with its source (immutable, computed once)."""
    cls = SECTIONS[section]
    owner = _default_owner(cls, field)
    return ResolvedValue(
        _class_default(cls, field),
        Source(
            "default",
            owner.__name__,
            field,
            f"{section}.{field}",
            static_override=is_static_override(cls, field),
        ),
    )


def resolve_field(
    section: str, field: str, layers: list[tuple[LayerName, BaseModel]]
) -> ResolvedValue:
    """Resolve `section.field` through `layers` (most specific first)."""
    chain = _chain(SECTIONS[section], field)
    for layer_name, layer in layers:
        for sec_name, owner in chain:
            sec = getattr(layer, sec_name)
            if sec is None:
                continue
            value = getattr(sec, field)
            if value is not None:
                return ResolvedValue(
                    value, Source(layer_name, owner.__name__, field, f"{sec_name}.{field}")
                )
    return _default_value(section, field)


def _resolve_root_field(field: str, layers: list[tuple[LayerName, BaseModel]]) -> ResolvedValue:
    for layer_name, layer in layers:
        value = getattr(layer, field)
        if value is not None:
            return ResolvedValue(value, Source(layer_name, "GlobalPipelineConfig", field, field))
    return ResolvedValue(
        _class_default(GlobalPipelineConfig, field),
        Source("default", "GlobalPipelineConfig", field, field),
    )


class ResolvedConfig:
    """Every field of a `GlobalPipelineConfig`, resolved, each with its `Source`."""

    def __init__(self, values: dict[str, ResolvedValue]):
        self.values = values
        self._config: GlobalPipelineConfig | None = None
        self._json: dict[str, dict[str, Any]] | None = None

    def __getitem__(self, dotted: str) -> ResolvedValue:
        return self.values[dotted]

    def value(self, dotted: str) -> Any:
        """The effective value of ``section.field`` (raises KeyError for an unknown path)."""
        return self.values[dotted].value

    def source(self, dotted: str) -> Source:
        """Where ``section.field`` was set, so an error can point at the layer to edit."""
        return self.values[dotted].source

    @property
    def config(self) -> GlobalPipelineConfig:
        """The resolved values as a concrete, validated `GlobalPipelineConfig`."""
        if self._config is None:
            data: dict[str, Any] = {}
            for dotted, rv in self.values.items():
                head, _, tail = dotted.partition(".")
                if tail:
                    data.setdefault(head, {})[tail] = rv.value
                else:
                    data[head] = rv.value
            self._config = GlobalPipelineConfig.model_validate(data)
        return self._config

    def to_json(self) -> dict[str, dict[str, Any]]:
        """{dotted path: {"value": json value, "source": {...}}}: stable, for CLIs and plans."""
        if self._json is None:
            self._json = {
                dotted: {"value": _jsonable(rv.value), "source": rv.source.as_dict()}
                for dotted, rv in self.values.items()
            }
        return self._json


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def resolve(
    global_layer: BaseModel | None = None,
    pipeline_layer: BaseModel | None = None,
    step_layer: BaseModel | None = None,
) -> ResolvedConfig:
    """Resolve every field from explicit layers (any may be None = empty)."""
    given = {"step": step_layer, "pipeline": pipeline_layer, "global": global_layer}
    layers: list[tuple[LayerName, BaseModel]] = [
        (name, layer) for name in LAYER_ORDER if (layer := given[name]) is not None
    ]
    values: dict[str, ResolvedValue] = {}
    for field in ROOT_FIELDS:
        values[field] = _resolve_root_field(field, layers)
    for section, cls in SECTIONS.items():
        for field in cls.model_fields:
            values[f"{section}.{field}"] = resolve_field(section, field, layers)
    return ResolvedConfig(values)
