"""``idle``: sleeps ``ms`` milliseconds without using the CPU."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import Number, RandomBlock, random_arg, variants, workload


def Value(ms: Number) -> dict[str, Any]:
    """``idle`` with ``config["ms"] = ms``."""
    return workload("idle", ms=ms)


def Variants(values: Any) -> dict[str, Any]:
    """One ``idle`` variant per ``ms`` in ``values``."""
    return {**workload("idle"), "config": variants("ms", values)}


def Random(lo: Number = 1, hi: Number = 100, count: int | None = None) -> RandomBlock:
    """``idle`` with ``ms`` drawn from [lo, hi] with the task set's RNG."""
    return random_arg("idle", "ms", lo, hi, count)


Idle = Value(100)
