"""``tumatmul``: multiplies two ``n`` x ``n`` matrices."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import RandomBlock, random_arg, variants, workload


def Value(n: int) -> dict[str, Any]:
    """``tumatmul`` with ``config["n"] = n``."""
    return workload("tumatmul", n=n)


def Variants(values: Any) -> dict[str, Any]:
    """One ``tumatmul`` variant per ``n`` in ``values``."""
    return {**workload("tumatmul"), "config": variants("n", values)}


def Random(lo: int = 1, hi: int = 50, count: int | None = None) -> RandomBlock:
    """``tumatmul`` with ``n`` drawn from [lo, hi] with the task set's RNG."""
    return random_arg("tumatmul", "n", lo, hi, count)
