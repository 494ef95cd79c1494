"""Offset blocks: release time of the first job (milliseconds)."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import Number, RandomBlock, value, variants


def Value(offset: Number) -> dict[str, Any]:
    """Fixed offset in ms."""
    return value("offset", offset)


def Variants(values: Any) -> dict[str, Any]:
    """One variant per value in ``values``."""
    return variants("offset", values)


def Random(lo: Number, hi: Number, count: int | None = None) -> RandomBlock:
    """Offset in ms drawn from [lo, hi] with the task set's RNG."""
    return RandomBlock("offset", lo, hi, count)
