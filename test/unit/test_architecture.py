"""The package's import graph keeps its shape: layers point one way, and nothing imports in a
circle.

The graph is read from the source with `ast` (every `import`, at module level or inside a
function), so a lazy import counts as much as one at the top. An edge is `importer -> imported`
between modules (`datastorage.http.audit -> datastorage.store.errors`) or from a module to a
third-party top-level package (`datastorage.app -> psycopg`). Failures list the offending edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "datastorage"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str  # a datastorage module, or a third-party top-level package
    names: tuple[str, ...]  # what `from ... import` took; () for a plain `import`
    line: int

    def __str__(self) -> str:
        taken = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.importer}:{self.line} -> {self.imported}{taken}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from` import names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _edges_of(module: str) -> Iterator[Edge]:
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _edge(module, alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            names = tuple(alias.name for alias in node.names)
            # `from datastorage.http import audit` imports the module datastorage.http.audit.
            submodules = [n for n in names if f"{target}.{n}" in MODULES]
            for name in submodules:
                yield _edge(module, f"{target}.{name}", (), node.lineno)
            rest = tuple(n for n in names if n not in submodules)
            if rest or not submodules:
                yield _edge(module, target, rest, node.lineno)


def _edge(importer: str, target: str, names: tuple[str, ...], line: int) -> Edge:
    if target.split(".")[0] != PACKAGE:
        return Edge(importer, target.split(".")[0], names, line)
    while target not in MODULES:  # `import datastorage.x.y` of an attribute: its module
        target = target.rsplit(".", 1)[0]
    return Edge(importer, target, names, line)


EDGES = [edge for module in MODULES for edge in _edges_of(module)]


def _internal(edge: Edge) -> bool:
    return edge.imported.split(".")[0] == PACKAGE and edge.imported != edge.importer


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for edge in EDGES:
        if _internal(edge):
            graph[edge.importer].add(edge.imported)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _offending(rule: str, edges: list[Edge]) -> str:
    return f"{rule}; offending imports:\n  " + "\n  ".join(map(str, edges))


# -- the graph reader itself: it must see what it is meant to see ------------------------------


def test_the_graph_sees_top_level_function_level_and_package_imports():
    assert Edge("datastorage.cli", "datastorage.server", ("serve",), 0) in [
        Edge(e.importer, e.imported, e.names, 0) for e in EDGES
    ], "a function-level import (cli's lazy subcommand imports) is missing"
    assert any(
        e.importer == "datastorage.app" and e.imported == "datastorage.http.health" for e in EDGES
    ), "`from datastorage.http import health` must be an edge to the module"
    assert any(e.importer == "datastorage.config" and e.imported == "yaml" for e in EDGES)
    assert all(e.imported in MODULES or "." not in e.imported for e in EDGES)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# -- the rules -----------------------------------------------------------------------------


def test_no_import_cycle():
    cycles = _cycles(_package_graph())
    assert not cycles, "import cycles:\n" + "\n".join(
        "  "
        + " <-> ".join(c)
        + "\n    "
        + "\n    ".join(str(e) for e in EDGES if e.importer in c and e.imported in c)
        for c in cycles
    )


def test_only_the_store_talks_to_postgresql():
    offending = [
        e
        for e in EDGES
        if e.imported in ("psycopg", "psycopg_pool") and not _under(e.importer, "datastorage.store")
    ]
    assert not offending, _offending("psycopg/psycopg_pool outside datastorage/store/", offending)


HTTP_ALLOWED = ("datastorage.http", "datastorage.app", "datastorage.server")


def test_only_the_http_layer_knows_starlette_and_problems():
    offending = [
        e
        for e in EDGES
        if (e.imported == "starlette" or e.imported == "datastorage.http.problems")
        and not _under(e.importer, *HTTP_ALLOWED)
    ]
    assert not offending, _offending(
        "starlette or the Problem class outside datastorage/http/, app.py, server.py", offending
    )


def test_the_domain_imports_nothing_of_the_package():
    offending = [
        e
        for e in EDGES
        if _under(e.importer, "datastorage.domain")
        and _internal(e)
        and not _under(e.imported, "datastorage.domain")
    ]
    assert not offending, _offending("datastorage/domain/ importing the package", offending)
