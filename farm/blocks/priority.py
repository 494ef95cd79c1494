"""Priority blocks: 1..127 fixed priority, 128 EDF.

On farm agents a fixed priority is SCHED_FIFO, where a larger number is more
urgent; the High/Medium/Low helpers follow that meaning. A task without a
priority block runs best effort (normal time-sharing); there is no block for
that, since a priority value must be 1..128 (0 is refused by validation).
"""

from __future__ import annotations

from typing import Any

from farm.blocks._make import RandomBlock, value, variants

EDF = {"priority": 128}


def Value(priority: int) -> dict[str, Any]:
    """Fixed priority ``priority`` (1..127, or 128 = EDF)."""
    return value("priority", priority)


def Variants(values: Any = range(1, 128)) -> dict[str, Any]:
    """One variant per priority in ``values`` (default: every fixed priority 1..127)."""
    return variants("priority", values)


def Random(lo: int = 1, hi: int = 127, count: int | None = None) -> RandomBlock:
    """Priority drawn from [lo, hi] with the task set's RNG (``count`` draws: a dimension)."""
    return RandomBlock("priority", lo, hi, count)


def HighRandom(count: int | None = None) -> RandomBlock:
    """Random urgent fixed priority (85..127)."""
    return Random(85, 127, count)


def MediumRandom(count: int | None = None) -> RandomBlock:
    """Random medium fixed priority (43..84)."""
    return Random(43, 84, count)


def LowRandom(count: int | None = None) -> RandomBlock:
    """Random least urgent fixed priority (1..42)."""
    return Random(1, 42, count)
