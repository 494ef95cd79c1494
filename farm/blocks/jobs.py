"""Number of jobs blocks (``numberofjobs``; 0 = no limit, runs until stopped)."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import RandomBlock, value, variants


def Value(numberofjobs: int) -> dict[str, Any]:
    """Fixed jobs."""
    return value("numberofjobs", numberofjobs)


def Variants(values: Any) -> dict[str, Any]:
    """One variant per value in ``values``."""
    return variants("numberofjobs", values)


def Random(lo: int, hi: int, count: int | None = None) -> RandomBlock:
    """Jobs drawn from [lo, hi] with the task set's RNG."""
    return RandomBlock("numberofjobs", lo, hi, count)
