"""``period`` blocks (malsami fork): taskgen's Value and Variants, draws in 1000..20000 ms."""

from __future__ import annotations

from farm.compat.blocks import drawn
from farm.compat.taskgen.blocks.period import Value, Variants

__all__ = ["HighRandom", "LowRandom", "MediumRandom", "Random", "Value", "Variants"]

Random = drawn(Value, 1000, 20000)
HighRandom = drawn(Value, 1000, 3000)
MediumRandom = drawn(Value, 4000, 10000)
LowRandom = drawn(Value, 10000, 20000)
