"""Find a config layer given as a YAML/JSON file path or as a saved Block name."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel

from prefect_hcs.config.documents import parse_document, read_document_file
from prefect_hcs.config.layers import ConfigError, LayerName, load_layer
from prefect_hcs.errors import UserFacingError

_LAYER_FILE_SUFFIXES = (".yaml", ".yml", ".json")


class BlockNotFoundError(UserFacingError, LookupError):
    """A config block name that does not exist on the Prefect server."""


def load_layer_block(name: str, layer: LayerName) -> BaseModel:
    """Load a saved config block by name and return its layer."""
    from prefect_hcs.blocks.config_blocks import LAYER_BLOCKS
    from prefect_hcs.blocks.loading import load_block

    if layer not in LAYER_BLOCKS:
        raise ConfigError(layer, name, ["step layers live in the pipeline, not in blocks"])
    cls = LAYER_BLOCKS[layer]
    try:
        block = load_block(cls, name)
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        raise BlockNotFoundError(
            f"{layer} config: no {cls.get_block_type_slug()} block named {name!r} on the Prefect "
            f"server, and no file of that name. Create it with `prefect-hcs blocks apply blocks/` "
            f"or list the saved ones with `prefect block ls`."
        ) from None
    return block.to_layer()


def is_block_name(ref: str | None) -> bool:
    """Whether `ref` names a saved Block (so loading it needs the Prefect API), not a file."""
    if not ref:
        return False
    path = Path(ref)
    return not (path.suffix.lower() in _LAYER_FILE_SUFFIXES or path.exists())


def load_layer_source(ref: str | None, layer: LayerName) -> BaseModel | None:
    """`ref` is a path to a YAML/JSON layer file, a block name, or None (empty layer)."""
    if ref is None or ref == "":
        return None
    path = Path(ref)
    if not is_block_name(ref):
        if not path.is_file():
            raise ConfigError(layer, ref, ["file not found (a block name has no .yaml suffix)"])
        return _load_layer_file(path, layer)
    return load_layer_block(ref, layer)


def _load_layer_file(path: Path, layer: LayerName) -> BaseModel:
    """A layer file is either a bare layer or a `blocks/` document (its `values` are the layer)."""
    try:
        data = parse_document(read_document_file(path, f"{layer} config"), f"{layer} config {path}")
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(layer, str(path), [f"not valid YAML: {exc}"]) from None
    if isinstance(data, dict) and "block_type" in data and "values" in data:
        data = data["values"]
    return load_layer(data, layer=layer, origin=str(path))


def layer_from_data(data: object, layer: LayerName, origin: str) -> BaseModel:
    """A config layer from parsed data (a block's `values`), checked as a layer file is."""
    return load_layer(data, layer=layer, origin=origin)
