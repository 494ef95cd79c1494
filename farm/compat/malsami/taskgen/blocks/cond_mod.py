"""``cond_mod`` block (malsami fork): Value(arg1), Random(n) = 1..n, Variants(n) = range(1, n)."""

from __future__ import annotations

import random
from typing import Any

from farm.compat.blocks import workload

Value, Random, Variants = workload("cond_mod", first=1)


def Break() -> dict[str, Any]:
    return Value(2)


def RandomBreak() -> dict[str, Any]:
    return Value(random.randint(0, 1000000) * 2)
