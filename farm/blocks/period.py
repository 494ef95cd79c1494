"""Period blocks (milliseconds; 0 = one-shot, jobs back to back)."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import Number, RandomBlock, value, variants


def Value(period: Number) -> dict[str, Any]:
    """Fixed period in ms."""
    return value("period", period)


def Variants(values: Any = range(20)) -> dict[str, Any]:
    """One variant per period in ``values`` (default 0..19 ms, like taskgen)."""
    return variants("period", values)


def Random(lo: Number = 1, hi: Number = 20, count: int | None = None) -> RandomBlock:
    """Period (ms) drawn from [lo, hi] with the task set's RNG (``count`` draws: a dimension)."""
    return RandomBlock("period", lo, hi, count)


def HighRandom(count: int | None = None) -> RandomBlock:
    """Random short period, 1..5 ms."""
    return Random(1, 5, count)


def MediumRandom(count: int | None = None) -> RandomBlock:
    """Random medium period, 5..10 ms."""
    return Random(5, 10, count)


def LowRandom(count: int | None = None) -> RandomBlock:
    """Random long period, 10..20 ms."""
    return Random(10, 20, count)
