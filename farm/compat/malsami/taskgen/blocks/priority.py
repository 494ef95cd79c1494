"""``priority`` blocks (malsami fork): taskgen's Value, ranges within 0..127."""

from __future__ import annotations

from farm.compat.blocks import drawn, spread
from farm.compat.taskgen.blocks.priority import Value

__all__ = ["HighRandom", "LowRandom", "MediumRandom", "Random", "Value", "Variants"]

Variants = spread(Value, range(0, 127))
Random = drawn(Value, 1, 127)
HighRandom = drawn(Value, 0, 42)
MediumRandom = drawn(Value, 42, 84)
LowRandom = drawn(Value, 84, 127)
