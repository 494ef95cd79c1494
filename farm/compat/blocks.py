"""Block factories both taskgen forks share: a workload's Value/Random/Variants, drawn values.

The forks' block modules bind these at module level (``Value, Random,
Variants = workload("pi", first=1)``), so each fork keeps its own names and
defaults while the shape lives here once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

Block = dict[str, Any]


def workload(
    pkg: str, *, first: int, quota: str | None = None
) -> tuple[Callable[[Any], Block], Callable[[int], Block], Callable[[int], Block]]:
    """``Value(arg1)``, ``Random(n)`` (arg1 in 1..n) and ``Variants(variants)`` (from ``first``).

    ``quota``, if given, is part of every block (argos taskgen: "1M"; the malsami fork: none).
    """

    def Value(arg1: Any) -> Block:
        block: Block = {"pkg": pkg}
        if quota is not None:
            block["quota"] = quota
        block["config"] = {"arg1": arg1}
        return block

    def Random(n: int) -> Block:
        return Value(random.randint(1, n))

    def Variants(variants: int) -> Block:
        return Value(range(first, variants))

    return Value, Random, Variants


def drawn(value: Callable[[Any], Block], lo: int, hi: int, scale: int = 1) -> Callable[[], Block]:
    """A block function drawing ``scale * randint(lo, hi)`` anew on each call."""

    def draw() -> Block:
        return value(scale * random.randint(lo, hi))

    return draw


def spread(value: Callable[[Any], Block], values: Any) -> Callable[[], Block]:
    """A block function making ``values`` a dimension (a list is copied on each call)."""

    def dimension() -> Block:
        return value(list(values) if isinstance(values, list) else values)

    return dimension


def random_list(mix: Callable[[int], list[Any]]) -> Callable[[int, int], list[Any]]:
    """``RandomList(size, par1_max)``: ``size`` blocks, each from a fresh ``mix(par1_max)``."""

    def RandomList(size: int, par1_max: int) -> list[Any]:
        return [random.choice(mix(par1_max)) for _ in range(size)]

    return RandomList
