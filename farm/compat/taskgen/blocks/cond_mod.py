"""``cond_mod`` block (taskgen): Value(arg1), Random(n) = 1..n, Variants(n) = range(n)."""

from __future__ import annotations

import random
from typing import Any

from farm.compat.taskgen.blocks._workload import rand, value, variants


def Value(arg1: Any) -> dict[str, Any]:
    return value("cond_mod", arg1)


def Random(n: int) -> dict[str, Any]:
    return rand("cond_mod", n)


def Variants(n: int) -> dict[str, Any]:
    return variants("cond_mod", n)


def Break() -> dict[str, Any]:
    """Ends at once (arg1 2)."""
    return Value(2)


def RandomBreak() -> dict[str, Any]:
    """An even arg1 drawn from 0..200."""
    return Value(random.randint(0, 100) * 2)
