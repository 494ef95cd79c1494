"""``cond_42`` block (taskgen): Value(arg1), Random(n) = 1..n, Variants(n) = range(n)."""

from __future__ import annotations

from typing import Any

from farm.compat.blocks import workload

Value, Random, Variants = workload("cond_42", first=0, quota="1M")


def Break() -> dict[str, Any]:
    """Ends at once (arg1 42)."""
    return Value(42)
