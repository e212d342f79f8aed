"""The code's shape stays changeable: no import cycles (function-level imports included), no module importing a
private name from another package, and no file of the package over about 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "organsam"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every ``from organsam... import`` / ``import organsam...`` at any depth, TYPE_CHECKING blocks left out."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("organsam"):
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("organsam"):
                    yield a.name, []
        stack.extend(ast.iter_child_nodes(node))


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for name, path in mods.items():
        for module, names in _imports(ast.parse(path.read_text())):
            if module == "organsam":  # the lazy package facade (``__version__``, ``organsam.segment``)
                continue
            if module in mods:
                graph[name].add(module)
            for n in names:
                if f"{module}.{n}" in mods:
                    graph[name].add(f"{module}.{n}")
                if n.startswith("_") and not n.startswith("__") and name.split(".")[:2] != module.split(".")[:2]:
                    private.append((name, module, n))
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    graph, _ = _graph()
    assert "organsam.inference.batch.driver" in graph and graph["organsam.inference.batch.driver"]
    assert _cycles(graph) == []


def test_no_private_names_imported_across_packages() -> None:
    _, private = _graph()
    assert private == []


def test_every_file_stays_small() -> None:
    """No module of the package over about 400 lines (formatted by ``ruff format``)."""
    sizes = {p.relative_to(PKG).as_posix(): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    assert len(sizes) > 100
    assert {k: v for k, v in sizes.items() if v > 410} == {}
