"""Package structure: no import cycle among farm/ and bench/ modules, no farm module over 450 lines.

The import graph is read with ``ast`` (nothing is imported): absolute ``farm.x``
and ``bench.x`` imports and relative ones, anywhere in a module (function-level
imports count: they still tie the modules together), except inside
``if TYPE_CHECKING:`` blocks. ``from farm.a import b`` is an edge to ``farm.a.b``
when that is a module, else to ``farm.a``. The bench scripts run with bench/ on
``sys.path``, so there ``import boot`` is an edge to ``bench.boot``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("farm", "bench")
MAX_LINES = 450


def module_name(path: Path) -> str:
    """Dotted name of a .py file below the repository (``farm/a/__init__.py`` -> ``farm.a``)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    """Every module of the checked packages by dotted name."""
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, is_package: bool, source: str, modules: set[str]) -> set[str]:
    """The checked ``modules`` that module ``name`` (its text ``source``) imports at run time."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]  # base of relative imports

    def add(target: str) -> None:
        if name.startswith("bench.") and f"bench.{target}" in modules:
            target = f"bench.{target}"  # bench scripts import their siblings by bare name
        while target and target not in modules:  # farm.a.b.Thing -> farm.a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in _runtime_nodes(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if name.startswith("bench.") and f"bench.{source}" in modules:
                source = f"bench.{source}"
            if source.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                add(full if full in modules else source)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the checked modules it imports."""
    modules = all_modules()
    names = set(modules)
    return {
        name: imports_of(name, path.name == "__init__.py", path.read_text(), names)
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as ``[a, b, ..., a]``, or [] if the graph has none."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_the_graph_sees_relative_from_and_type_checking_imports() -> None:
    graph = import_graph()
    assert "farm.cli.root" in graph["farm.cli"]  # from farm.cli.root import main
    assert "farm.errors" in graph["farm.cli.errors"]  # from farm.errors import ConfigError
    assert "farm.cli" not in graph["farm.errors"]
    assert "bench.common" in graph["bench.boot_warm"]  # from common import boot_once
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import errors\n"
        "from .. import config\n"
        "from farm.bridge import dhcp, net_up\n"
        "def f():\n    import farm.targets\n"
        "if TYPE_CHECKING:\n    from farm import distributor\n"
        "else:\n    import farm.procs\n"
    )
    got = imports_of("farm.cli.fake", False, source, set(graph))
    assert got == {"farm.cli.errors", "farm.config", "farm.bridge.dhcp", "farm.bridge"} | {
        "farm.targets",
        "farm.procs",
    }


def test_find_cycle_reports_the_loop() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_farm_module_over_450_lines() -> None:
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text().splitlines())
        for path in sorted((REPO / "farm").rglob("*.py"))
    }
    over = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
