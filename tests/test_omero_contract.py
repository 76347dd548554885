"""Contract check: the real OMERO adapter only uses omero-py API that exists.

omero-py cannot be imported here (its Ice runtime has no wheel for this Python), so both sides are
read with `ast`: the adapter module, to collect every attribute and keyword it uses on omero-py
objects, and omero-py's installed source (``pip install --no-deps omero-py``), to check that each
entry of the adapter's `OMERO_API` table exists there (with inherited members and keywords).
"""

from __future__ import annotations

import ast
import site
import sys
import sysconfig
from functools import cache
from pathlib import Path
from typing import get_args

import pytest

from prefect_hcs.storage import omero_api, omero_blitz
from prefect_hcs.storage.omero_api import OMERO_API, OMERO_OBJECT_TYPES
from prefect_hcs.storage.omero_gateway import ObjectType


def _site_packages() -> Path | None:
    candidates = [sysconfig.get_paths()["purelib"], *site.getsitepackages(), *sys.path]
    for entry in candidates:
        if entry and (Path(entry) / "omero" / "gateway" / "__init__.py").is_file():
            return Path(entry)
    return None


SITE = _site_packages()
needs_omero_source = pytest.mark.skipif(
    SITE is None,
    reason="omero-py source not installed: `pip install --no-deps omero-py` (import not needed)",
)


@cache
def _module(source: str) -> ast.Module:
    assert SITE is not None
    return ast.parse((SITE / source).read_text(encoding="utf-8"))


def _top_level(tree: ast.Module) -> tuple[dict[str, ast.ClassDef], dict[str, str], set[str]]:
    """(classes by name, aliases `A = B`, every top-level name) of a module."""
    classes: dict[str, ast.ClassDef] = {}
    aliases: dict[str, str] = {}
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                classes[node.name] = node
                names.add(node.name)
            elif isinstance(node, ast.FunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        names.add(target.id)
                        if isinstance(node.value, ast.Name):
                            aliases[target.id] = node.value.id
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)  # generated model modules define classes inside `if`

    visit(tree.body)
    return classes, aliases, names


def _find_member(source: str, cls: str, member: str) -> ast.AST | None:
    """The definition of `member` on `cls` or its bases (same module), or None."""
    classes, aliases, _ = _top_level(_module(source))
    seen: set[str] = set()
    todo = [cls]
    while todo:
        name = todo.pop(0)
        while name in aliases and name not in classes:
            name = aliases[name]
        if name in seen or name not in classes:
            continue
        seen.add(name)
        node = classes[name]
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name == member:
                return item
            if isinstance(item, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == member for t in item.targets
            ):
                return item
        for item in ast.walk(node):  # instance attributes: self.<member> = ...
            if isinstance(item, ast.Assign) and any(
                isinstance(t, ast.Attribute)
                and t.attr == member
                and isinstance(t.value, ast.Name)
                and t.value.id == "self"
                for t in item.targets
            ):
                return item
        todo += [b.id for b in node.bases if isinstance(b, ast.Name)]
    return None


def _accepts(func: ast.AST, keyword: str) -> bool:
    assert isinstance(func, ast.FunctionDef)
    args = func.args
    names = {a.arg for a in args.args + args.kwonlyargs + args.posonlyargs}
    return keyword in names or args.kwarg is not None


@needs_omero_source
@pytest.mark.parametrize("use", OMERO_API, ids=lambda u: f"{u.cls or 'module'}.{u.member}")
def test_table_entry_exists_in_omero_py(use: omero_api.ApiUse) -> None:
    if use.cls is None:
        _, _, names = _top_level(_module(use.source))
        assert use.member in names, f"{use.member} is not defined in {use.source}"
        return
    found = _find_member(use.source, use.cls, use.member)
    assert found is not None, f"{use.cls}.{use.member} not found in {use.source} (nor its bases)"
    for kw in use.keywords:
        assert _accepts(found, kw), f"{use.cls}.{use.member} has no keyword {kw!r}"


@needs_omero_source
def test_object_types_are_known_to_getobject() -> None:
    tree = _module("omero/gateway/__init__.py")
    keys: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "refreshWrappers":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Dict):
                    keys |= {k.value for k in sub.keys if isinstance(k, ast.Constant)}
    assert keys, "KNOWN_WRAPPERS not found in omero-py"
    assert {t.lower() for t in OMERO_OBJECT_TYPES} <= keys
    assert set(get_args(ObjectType)) <= set(OMERO_OBJECT_TYPES)


# Attributes of the adapter's own non-omero members, and of builtins/stdlib used on results.
_OWN_RECEIVERS = {"_password", "_lock", "__dict__"}
_BUILTIN_METHODS = set(dir(str)) | set(dir(bytes)) | set(dir(dict)) | set(dir(list))


def _adapter_uses() -> tuple[set[str], dict[str, set[str]], set[str]]:
    """(attribute names, {called name: keywords}, getObject type literals) of the real adapter."""
    tree = ast.parse(Path(omero_blitz.__file__).read_text(encoding="utf-8"))
    modules = {
        (alias.asname or alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    } - {"gateway"}
    adapter = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BlitzGatewayAdapter"
    )
    attrs: set[str] = set()
    keywords: dict[str, set[str]] = {}
    literals: set[str] = set()
    for node in ast.walk(adapter):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("getObject", "_get") and len(node.args) >= 2:
                arg = node.args[1 if node.func.attr == "_get" else 0]
                if isinstance(arg, ast.Constant):
                    literals.add(arg.value)
            keywords.setdefault(node.func.attr, set()).update(k.arg for k in node.keywords if k.arg)
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        if isinstance(value, ast.Name) and (value.id == "self" or value.id in modules):
            continue
        if (
            isinstance(value, ast.Attribute)
            and isinstance(value.value, ast.Name)
            and value.value.id == "self"
            and value.attr in _OWN_RECEIVERS
        ):
            continue
        if node.attr.startswith("__"):
            continue
        attrs.add(node.attr)
    return attrs, keywords, literals


def test_table_covers_every_omero_name_the_adapter_uses() -> None:
    attrs, keywords, literals = _adapter_uses()
    table = {u.name for u in OMERO_API}
    unknown = sorted(a for a in attrs - table if a not in _BUILTIN_METHODS)
    assert not unknown, f"adapter uses omero-py names missing from OMERO_API: {unknown}"
    for name, used in keywords.items():
        if name not in table:
            continue
        allowed = {kw for u in OMERO_API if u.name == name for kw in u.keywords}
        assert used <= allowed, f"{name}() called with keywords {used - allowed} not in OMERO_API"
    assert literals <= set(OMERO_OBJECT_TYPES), literals - set(OMERO_OBJECT_TYPES)
    assert {"getObject", "getPlane", "linkAnnotation", "createOriginalFileFromFileObj"} <= attrs


def test_table_has_no_stale_entries() -> None:
    attrs, _, _ = _adapter_uses()
    stale = sorted({u.name for u in OMERO_API} - attrs)
    assert not stale, f"OMERO_API lists names the adapter no longer uses: {stale}"


def test_real_adapter_without_omero_py_explains_the_install() -> None:
    """`import omero` fails here (no Ice): the error tells the user what to install."""
    adapter = omero_blitz.BlitzGatewayAdapter("omero.example.org", "alice", "s3cret-pw")
    with pytest.raises(ImportError) as info:
        adapter.connect()
    message = str(info.value)
    assert "prefect-hcs[omero]" in message and "zeroc-ice" in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in repr(adapter)
