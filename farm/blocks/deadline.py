"""Deadline blocks: relative deadline for EDF (milliseconds; 0 = none)."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import Number, RandomBlock, value, variants


def Value(deadline: Number) -> dict[str, Any]:
    """Fixed deadline in ms."""
    return value("deadline", deadline)


def Variants(values: Any) -> dict[str, Any]:
    """One variant per value in ``values``."""
    return variants("deadline", values)


def Random(lo: Number, hi: Number, count: int | None = None) -> RandomBlock:
    """Deadline in ms drawn from [lo, hi] with the task set's RNG."""
    return RandomBlock("deadline", lo, hi, count)
