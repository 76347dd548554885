"""The global and pipeline config layers as Prefect Blocks.

A block document stores every field, so "unset" must be a value: fields are optional and `None`
means "inherit" (the Block form in the UI shows them empty). A value explicitly equal to the class
default is stored as that value and still overrides lower-priority layers after a reload.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, HttpUrl, create_model
from pydantic.json_schema import GenerateJsonSchema

from prefect_hcs.config.layers import LAYER_FIELDS, LayerName, load_layer

#: Block JSON schemas by (class, arguments of model_json_schema).
_SCHEMAS: dict[tuple[Any, ...], dict[str, Any]] = {}
#: Block classes whose attributes are all set (only their schemas are cached).
_FINISHED: set[type] = set()
_DOCS = HttpUrl("https://github.com/prefect-hcs/prefect-hcs/blob/main/docs/config.md")


class _ConfigLayerBlock(Block):
    """Shared behaviour of the config-layer blocks."""

    model_config = ConfigDict(extra="forbid")
    _layer: ClassVar[LayerName] = "pipeline"

    def to_layer(self) -> BaseModel:
        """The block's values as a plain config layer (None = inherit)."""
        data = {name: getattr(self, name) for name in LAYER_FIELDS}
        dumped = {
            k: (v.model_dump() if isinstance(v, BaseModel) else v)
            for k, v in data.items()
            if v is not None
        }
        origin = f"block {self._block_document_name!r}" if self._block_document_name else "block"
        return load_layer(dumped, layer=self._layer, origin=origin)

    @classmethod
    def from_layer(cls, layer: BaseModel) -> Any:
        """A block (unsaved) holding exactly the given layer's values."""
        return cls(**{name: getattr(layer, name) for name in LAYER_FIELDS})

    @classmethod
    def model_json_schema(  # type: ignore[override]  # Prefect's Block signature, which it wraps
        cls,
        by_alias: bool = True,
        ref_template: str = "#/definitions/{model}",
        schema_generator: type[GenerateJsonSchema] = GenerateJsonSchema,
        mode: Literal["validation", "serialization"] = "validation",
    ) -> dict[str, Any]:
        """Prefect's schema of the block, built once per class (a copy each call).

        Prefect asks for it once per field every time a block is serialized (to find secret
        fields), and these blocks have every config section: without the cache one save took
        ~0.15 s of schema generation alone.
        """
        build = Block.model_json_schema.__func__  # type: ignore[attr-defined]
        if cls not in _FINISHED:  # still being made: its name and description are not set yet
            return build(cls, by_alias, ref_template, schema_generator, mode)
        key = (cls, by_alias, ref_template, schema_generator, mode)
        if key not in _SCHEMAS:
            _SCHEMAS[key] = build(cls, by_alias, ref_template, schema_generator, mode)
        return copy.deepcopy(_SCHEMAS[key])


def _make_block(
    name: str, slug: str, layer: LayerName, description: str
) -> type[_ConfigLayerBlock]:
    block = create_model(name, __base__=_ConfigLayerBlock, **LAYER_FIELDS)
    block.__module__ = __name__
    block.__doc__ = description
    block._block_type_name = name.replace("Hcs", "HCS ").replace("Config", " Config").strip()
    block._block_type_slug = slug
    block._description = description
    block._documentation_url = _DOCS
    block._layer = layer
    block._code_example = (
        f"```python\nfrom prefect_hcs.blocks import {name}\n\n"
        f'layer = {name}.load("BLOCK_NAME").to_layer()\n```'
    )
    _FINISHED.add(block)
    return block


HcsGlobalConfig = _make_block(
    "HcsGlobalConfig",
    "hcs-global-config",
    "global",
    "The facility-wide layer of prefect-hcs settings (backends, output paths, well filters, "
    "OME-Zarr encoding, workers). Empty fields fall back to the built-in defaults.",
)
HcsPipelineConfig = _make_block(
    "HcsPipelineConfig",
    "hcs-pipeline-config",
    "pipeline",
    "Per-assay prefect-hcs settings. Empty fields inherit from the global config block; "
    "a set field overrides it for every plate run of this pipeline.",
)

LAYER_BLOCKS: dict[str, type[_ConfigLayerBlock]] = {
    "global": HcsGlobalConfig,
    "pipeline": HcsPipelineConfig,
}
