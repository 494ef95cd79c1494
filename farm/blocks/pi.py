"""``pi``: computes ``digits`` decimal digits of pi."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import RandomBlock, random_arg, variants, workload


def Value(digits: int) -> dict[str, Any]:
    """``pi`` with ``config["digits"] = digits``."""
    return workload("pi", digits=digits)


def Variants(values: Any) -> dict[str, Any]:
    """One ``pi`` variant per ``digits`` in ``values``."""
    return {**workload("pi"), "config": variants("digits", values)}


def Random(lo: int = 1, hi: int = 1000, count: int | None = None) -> RandomBlock:
    """``pi`` with ``digits`` drawn from [lo, hi] with the task set's RNG."""
    return random_arg("pi", "digits", lo, hi, count)
