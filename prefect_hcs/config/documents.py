"""Bounded reading of the YAML/JSON documents users hand us (pipelines, config layers, blocks).

A pipeline or config document is a few kilobytes. A document that is megabytes large, nested
hundreds of levels deep or built from aliases that expand exponentially is a mistake (or an
attack), and parsing it first would take minutes and gigabytes or end in a `RecursionError`.
So the size is checked before reading, the nesting depth is checked on the parser's event stream
(no objects built), and the expanded size after aliases is counted before anything validates it.
Every refusal is one `DocumentError` line naming the document, the limit and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from prefect_hcs.errors import UserFacingError

#: Largest document accepted (bytes). A 100-step pipeline is ~20 KB.
MAX_DOCUMENT_BYTES = 1 << 20
#: Deepest nesting of mappings/lists accepted. A pipeline needs about 10 levels.
MAX_DEPTH = 50
#: Most values a document may hold once YAML aliases are expanded.
MAX_NODES = 100_000

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


class DocumentError(UserFacingError, ValueError):
    """A document is too large, too deep or not parseable. Names the document and the limit."""


def read_document_file(path: Path, what: str = "document") -> str:
    """The text of a small document file; refuses large or non-text files before reading them."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DocumentError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentError(_too_large(f"{what} {path}", size))
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DocumentError(f"{what} {path} is not UTF-8 text: give a YAML or JSON file") from None
    except OSError as exc:
        raise DocumentError(f"{what} {path}: cannot read it ({exc.strerror})") from None


def parse_document(text: str, where: str) -> Any:
    """Parse one YAML (or JSON) document within the size, depth and expansion limits.

    `where` names the document in messages (e.g. "pipeline file p.yaml").
    """
    docs = parse_documents(text, where, multiple=False)
    return docs[0] if docs else None


def parse_documents(text: str, where: str, *, multiple: bool = True) -> list[Any]:
    """Parse a YAML stream (several `---` documents when `multiple`) within the limits.

    Raises `DocumentError` for a document over the limits and `yaml.YAMLError` /
    `json.JSONDecodeError` for a syntax error (callers word those in their own terms).
    """
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentError(_too_large(where, size))
    if not multiple and text.lstrip().startswith(("{", "[")):
        _check_json_depth(text, where)
        docs = [json.loads(text)]
    else:
        _check_yaml_depth(text, where)
        docs = list(yaml.load_all(text, Loader=_LOADER)) if multiple else [yaml.load(text, _LOADER)]  # noqa: S506 - a safe loader
    for doc in docs:
        check_data_size(doc, where)
    return docs


def check_data_size(data: Any, where: str) -> None:
    """Refuse parsed data nested deeper than MAX_DEPTH or holding more than MAX_NODES values.

    Shared sub-trees (YAML aliases) are counted once per use, without expanding them.
    """
    counts: dict[int, int] = {}
    stack: list[tuple[Any, int, bool]] = [(data, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if not isinstance(node, dict | list | tuple):
            continue
        if depth > MAX_DEPTH:
            raise DocumentError(_too_deep(where))
        children = list(node.values()) if isinstance(node, dict) else list(node)
        if not children_done:
            if id(node) in counts:
                continue
            counts[id(node)] = -1  # in progress: a cycle is refused below
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children)
            continue
        total = 1
        for child in children:
            n = counts.get(id(child), 1) if isinstance(child, dict | list | tuple) else 1
            if n < 0:
                raise DocumentError(f"{where} refers to itself (a recursive YAML alias)")
            total += n
        counts[id(node)] = total
        if total > MAX_NODES:
            raise DocumentError(
                f"{where} expands to more than {MAX_NODES:,} values (YAML aliases): write the "
                "values out, or split the document"
            )


def _check_yaml_depth(text: str, where: str) -> None:
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, _OPEN):
                depth += 1
                if depth > MAX_DEPTH:
                    raise DocumentError(_too_deep(where))
            elif isinstance(event, _CLOSE):
                depth -= 1
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):  # libyaml's own limit, hit while scanning ahead
            raise DocumentError(_too_deep(where)) from None
        raise


def _check_json_depth(text: str, where: str) -> None:
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise DocumentError(_too_deep(where))
        elif ch in "]}":
            depth -= 1


def _too_large(where: str, size: int) -> str:
    return (
        f"{where} is {size:,} bytes; documents of more than {MAX_DOCUMENT_BYTES:,} bytes are "
        "refused before parsing. Give the pipeline/config document itself (a few KB), not data"
    )


def _too_deep(where: str) -> str:
    return (
        f"{where} is nested more than {MAX_DEPTH} levels deep; a pipeline or config needs about "
        "10. Check the document's indentation and brackets"
    )
