"""``linpack``: solves a dense ``n`` x ``n`` linear system (LINPACK style)."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import RandomBlock, random_arg, variants, workload


def Value(n: int) -> dict[str, Any]:
    """``linpack`` with ``config["n"] = n``."""
    return workload("linpack", n=n)


def Variants(values: Any) -> dict[str, Any]:
    """One ``linpack`` variant per ``n`` in ``values``."""
    return {**workload("linpack"), "config": variants("n", values)}


def Random(lo: int = 1, hi: int = 100, count: int | None = None) -> RandomBlock:
    """``linpack`` with ``n`` drawn from [lo, hi] with the task set's RNG."""
    return random_arg("linpack", "n", lo, hi, count)
