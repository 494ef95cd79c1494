"""``linpack`` block (taskgen): Value(arg1), Random(n) = 1..n, Variants(n) = range(n)."""

from __future__ import annotations

from typing import Any

from farm.compat.taskgen.blocks._workload import rand, value, variants


def Value(arg1: Any) -> dict[str, Any]:
    return value("linpack", arg1)


def Random(n: int) -> dict[str, Any]:
    return rand("linpack", n)


def Variants(n: int) -> dict[str, Any]:
    return variants("linpack", n)
