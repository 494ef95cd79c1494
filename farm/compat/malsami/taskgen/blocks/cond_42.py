"""``cond_42`` block (malsami fork): Value(arg1), Random(n) = 1..n, Variants(n) = range(1, n)."""

from __future__ import annotations

from typing import Any

from farm.compat.blocks import workload

Value, Random, Variants = workload("cond_42", first=1)


def Break() -> dict[str, Any]:
    return Value(42)
