"""``cond_42`` block (taskgen): Value(arg1), Random(n) = 1..n, Variants(n) = range(n)."""

from __future__ import annotations

from typing import Any

from farm.compat.taskgen.blocks._workload import rand, value, variants


def Value(arg1: Any) -> dict[str, Any]:
    return value("cond_42", arg1)


def Random(n: int) -> dict[str, Any]:
    return rand("cond_42", n)


def Variants(n: int) -> dict[str, Any]:
    return variants("cond_42", n)


def Break() -> dict[str, Any]:
    """Ends at once (arg1 42)."""
    return Value(42)
