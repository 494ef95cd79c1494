"""No module of farm imports one that imports it back, directly or transitively.

Counted: every ``import``/``from ... import`` of a farm module, at any level
(lazy imports inside functions and TYPE_CHECKING blocks included).
``from pkg import submodule`` depends on the submodule, not on the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def import_graph() -> dict[str, set[str]]:
    files = {}
    for path in (ROOT / "farm").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path

    def owner(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                base = node.module
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{node.module}"
                subs = [f"{base}.{a.name}" for a in node.names]
                targets = subs if all(s in files for s in subs) else [base]
            for target in targets:
                dep = owner(target) if target.startswith("farm") else None
                if dep is not None and dep != module:
                    graph[module].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_farm_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "farm.core.distributor" in graph
    assert cycles(graph) == []


def test_the_core_records_are_a_leaf() -> None:
    """Monitors and reports import farm.core.records: it must not pull in the core."""
    assert import_graph()["farm.core.records"] == set()
