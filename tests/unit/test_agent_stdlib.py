"""farm/agent ships in the guest image: it may import only the stdlib and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import farm.agent

AGENT_DIR = Path(farm.agent.__file__).parent


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_agent_imports_only_stdlib_and_itself() -> None:
    files = sorted(AGENT_DIR.glob("*.py"))
    assert len(files) > 5
    for path in files:
        for name in imports(path):
            top = name.split(".")[0]
            ok = (
                top in sys.stdlib_module_names
                or name == "farm.agent"
                or name.startswith("farm.agent.")
            )
            assert ok, f"{path.name} imports {name}"


def test_workloads_script_is_self_contained() -> None:
    path = AGENT_DIR / "workloads.py"
    assert not [n for n in imports(path) if n.startswith("farm")]
    # imports at run time (not under ``if TYPE_CHECKING``) stay lean: start-up
    # time counts toward every job's CPU budget
    runtime: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            runtime.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            runtime.add(node.module)
    assert not runtime & {"typing", "json", "random", "collections", "collections.abc", "re"}
