"""``cond_mod`` block (taskgen): Value(arg1), Random(n) = 1..n, Variants(n) = range(n)."""

from __future__ import annotations

import random
from typing import Any

from farm.compat.blocks import workload

Value, Random, Variants = workload("cond_mod", first=0, quota="1M")


def Break() -> dict[str, Any]:
    """Ends at once (arg1 2)."""
    return Value(2)


def RandomBreak() -> dict[str, Any]:
    """An even arg1 drawn from 0..200."""
    return Value(random.randint(0, 100) * 2)
