"""The import layers of DESIGN.md, checked on the source: no upward import, no import cycle.

Every module of `prefect_hcs` is parsed (not imported) and every ``import`` in it, at module level
or inside a function, is an edge. A module may import its own layer or a lower one:

    config → formats → storage → processing → pipeline → blocks → runtime → cli

`errors.py` sits below everything (anyone may raise a `UserFacingError`); the package's own
``__init__`` re-exports Blocks lazily and counts as the top. `prefect_hcs.testing` holds the test
doubles (OMERO stand-in, synthetic plates): it may use config, formats and storage, and only the
CLI (``make-plate``, ``demo``) may import it, so no production path can reach a stand-in.

A cycle is reported as the chain of modules that import each other, whatever the layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "prefect_hcs"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
ORDER = ("config", "formats", "storage", "processing", "pipeline", "blocks", "runtime", "cli")
#: Rank of each layer; `testing` sits just above storage (it builds plates and OMERO stand-ins).
RANK = {name: 10 * i for i, name in enumerate(ORDER)} | {"errors": -10, "testing": 25}
#: The only layers that may import `prefect_hcs.testing`.
TESTING_USERS = ("testing", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported prefect_hcs module, line) for every import in the file, however nested."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the submodule; `from mod import name` the module
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                yield target, node.lineno


def _layer(module: str) -> str:
    """The layer a module belongs to: its sub-package, `cli` for cli*.py, else its own name."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    head = parts[1]
    return "cli" if head.startswith("cli") else head


def _rank(module: str) -> int:
    layer = _layer(module)
    if layer == "package":
        return 10 * len(ORDER)
    if layer not in RANK:
        raise AssertionError(f"{module}: no layer for {layer!r}; add it to RANK in {__file__}")
    return RANK[layer]


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, known):
            while target not in known and "." in target:  # `import a.b.c` of a name, not a module
                target = target.rpartition(".")[0]
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_chain(graph, set(c)) for c in components]


def _chain(graph: dict[str, dict[str, int]], members: set[str]) -> list[str]:
    """A closed path through a cycle's members, for the message: a → b → … → a."""
    start = min(members)
    path, seen = [start], {start}
    while True:
        nxt = next(n for n in sorted(graph[path[-1]]) if n in members)
        if nxt in seen:
            return path[path.index(nxt) :] + [nxt]
        path.append(nxt)
        seen.add(nxt)


def _with_packages_collapsed(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The graph without package ``__init__`` modules: importing a submodule always runs its
    package first, so an ``__init__`` re-exporting its modules is not a cycle with them."""
    packages = {n for n, p in _modules().items() if p.name == "__init__.py"}
    return {
        n: {t: line for t, line in edges.items() if t not in packages}
        for n, edges in graph.items()
        if n not in packages
    }


def test_the_walk_sees_every_kind_of_import() -> None:
    """The walker itself: relative, function-local and `from pkg import module` forms count."""
    assert "prefect_hcs.formats.fsio" in GRAPH["prefect_hcs.formats.detect"]
    assert "prefect_hcs.processing.registry" in GRAPH["prefect_hcs.processing"]  # `from .registry`
    assert len(GRAPH) > 100


def test_no_module_imports_a_higher_layer() -> None:
    problems = []
    for module, edges in sorted(GRAPH.items()):
        for target, line in sorted(edges.items()):
            if _rank(target) > _rank(module):
                problems.append(
                    f"{module} (line {line}) imports {target}: {_layer(module)} may not "
                    f"import {_layer(target)}"
                )
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_only_the_cli_reaches_the_test_doubles() -> None:
    problems = [
        f"{module} (line {line}) imports {target}"
        for module, edges in sorted(GRAPH.items())
        for target, line in sorted(edges.items())
        if _layer(target) == "testing" and _layer(module) not in TESTING_USERS
    ]
    assert not problems, "production code imports prefect_hcs.testing:\n" + "\n".join(problems)


def test_no_import_cycles() -> None:
    cycles = _cycles(_with_packages_collapsed(GRAPH))
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}, [["a", "b", "c", "a"]]),
        ({"a": {"b": 1}, "b": {}}, []),
    ],
)
def test_cycle_finder(graph: dict[str, dict[str, int]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected
