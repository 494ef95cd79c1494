"""``cond_mod``: counts to ``count`` (agent default 100000); stops at once if ``arg`` is even."""

from __future__ import annotations

import random
from typing import Any

from farm.blocks._make import RandomBlock, random_arg, variants, workload


def Value(arg: int, count: int | None = None) -> dict[str, Any]:
    """``cond_mod`` with ``arg`` (and how far to count unless arg is even)."""
    if count is None:
        return workload("cond_mod", arg=arg)
    return workload("cond_mod", arg=arg, count=count)


def Variants(values: Any) -> dict[str, Any]:
    """One ``cond_mod`` variant per ``arg`` in ``values``."""
    return {**workload("cond_mod"), "config": variants("arg", values)}


def Random(lo: int = 1, hi: int = 1000, count: int | None = None) -> RandomBlock:
    """``cond_mod`` with ``arg`` drawn from [lo, hi] with the task set's RNG."""
    return random_arg("cond_mod", "arg", lo, hi, count)


def Break() -> dict[str, Any]:
    """``cond_mod`` that stops at once (arg 2)."""
    return Value(2)


def RandomBreak(lo: int = 0, hi: int = 100) -> RandomBreakBlock:
    """``cond_mod`` with a random even arg (2 * a draw from [lo, hi]): stops at once."""
    return RandomBreakBlock(lo, hi)


class RandomBreakBlock:
    """Callable block: ``cond_mod`` with arg = 2 * randint(lo, hi) from the task set's RNG."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def __call__(self, rng: random.Random) -> dict[str, Any]:
        return Value(2 * rng.randint(self.lo, self.hi))
