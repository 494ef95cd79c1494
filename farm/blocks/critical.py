"""Critical-time blocks: a job must end this long after its release (ms; 0 = no check)."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import Number, RandomBlock, value, variants


def Value(criticaltime: Number) -> dict[str, Any]:
    """Fixed critical time in ms."""
    return value("criticaltime", criticaltime)


def Variants(values: Any) -> dict[str, Any]:
    """One variant per value in ``values``."""
    return variants("criticaltime", values)


def Random(lo: Number, hi: Number, count: int | None = None) -> RandomBlock:
    """Critical time in ms drawn from [lo, hi] with the task set's RNG."""
    return RandomBlock("criticaltime", lo, hi, count)
