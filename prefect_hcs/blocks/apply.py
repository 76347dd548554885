"""`prefect-hcs blocks apply DIR`: create or update block documents from YAML files.

Every file is parsed and validated before anything is saved, so one bad file saves nothing.
File format (one or more YAML documents per file)::

    block_type: hcs-global-config   # or hcs-pipeline-config
    name: facility-default
    values:                         # a config layer; omitted fields inherit
      vfs_config: {materialization_backend: disk}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel

from prefect_hcs.config.documents import parse_documents, read_document_file
from prefect_hcs.config.layers import ConfigError, load_layer

_TYPES = {"hcs-global-config": "global", "hcs-pipeline-config": "pipeline"}
#: Block types whose `values` are the block's own fields (validated by the block class).
_PLAIN = {"hcs-slurm-cluster": "prefect_hcs.blocks.slurm:HcsSlurmCluster"}


@dataclass(frozen=True)
class BlockSpec:
    """One validated block document from a `blocks/` folder, ready to save under `name`."""

    block_type: str
    name: str
    layer: BaseModel
    origin: str


def read_block_specs(folder: Path) -> list[BlockSpec]:
    """Parse and validate every `*.yaml`/`*.yml` in `folder`; raise on the first bad file."""
    if not folder.is_dir():
        raise ConfigError("block", str(folder), ["not a folder of block YAML files"])
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not files:
        raise ConfigError("block", str(folder), ["no *.yaml files found"])
    specs: list[BlockSpec] = []
    seen: dict[tuple[str, str], str] = {}
    for path in files:
        try:
            text = read_document_file(path, "block file")
            docs = [d for d in parse_documents(text, f"block file {path}") if d is not None]
        except yaml.YAMLError as exc:
            raise ConfigError("block", str(path), [f"not valid YAML: {exc}"]) from None
        for i, doc in enumerate(docs):
            origin = f"{path}" + (f" document {i + 1}" if len(docs) > 1 else "")
            specs.append(_spec(doc, origin))
            key = (specs[-1].block_type, specs[-1].name)
            if key in seen:
                raise ConfigError(
                    "block", origin, [f"{key[0]}/{key[1]} is also defined in {seen[key]}"]
                )
            seen[key] = origin
    return specs


def _spec(doc: object, origin: str) -> BlockSpec:
    if not isinstance(doc, dict):
        raise ConfigError("block", origin, [f"expected a mapping, got {type(doc).__name__}"])
    unknown = set(doc) - {"block_type", "name", "values", "description"}
    if unknown:
        raise ConfigError(
            "block",
            origin,
            [f"unknown key(s) {sorted(unknown)}; allowed: block_type, name, values, description"],
        )
    block_type = doc.get("block_type")
    if block_type not in _TYPES and block_type not in _PLAIN:
        known = ", ".join([*_TYPES, *_PLAIN])
        raise ConfigError("block", origin, [f"block_type {block_type!r} is not one of {known}"])
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("block", origin, ["`name` must be a non-empty string"])
    if block_type in _PLAIN:
        return BlockSpec(block_type, name, _plain_block(block_type, doc, origin), origin)
    layer_name = _TYPES[block_type]
    layer = load_layer(doc.get("values") or {}, layer=layer_name, origin=origin)  # type: ignore[arg-type]
    return BlockSpec(block_type, name, layer, origin)


def _plain_block(block_type: str, doc: dict, origin: str) -> BaseModel:
    """An unsaved block of a `_PLAIN` type from the document's values, validated."""
    import importlib

    from pydantic import ValidationError

    module, attr = _PLAIN[block_type].split(":")
    cls = getattr(importlib.import_module(module), attr)
    try:
        return cls(**(doc.get("values") or {}))
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'values'}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError("block", origin, problems) from None


def apply_block_specs(specs: list[BlockSpec]) -> list[str]:
    """Save every spec (create or overwrite). Returns 'slug/name' of each saved document."""
    from prefect_hcs.blocks.config_blocks import LAYER_BLOCKS

    saved: list[str] = []
    for spec in specs:
        if spec.block_type in _PLAIN:
            spec.layer.save(spec.name, overwrite=True)  # type: ignore[attr-defined]
            saved.append(f"{spec.block_type}/{spec.name}")
            continue
        cls = LAYER_BLOCKS[_TYPES[spec.block_type]]
        cls.from_layer(spec.layer).save(spec.name, overwrite=True)
        saved.append(f"{spec.block_type}/{spec.name}")
    return saved
