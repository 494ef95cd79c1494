"""``numberofjobs`` blocks (malsami fork): taskgen's ``jobs`` plus High/Medium/LowRandom."""

from __future__ import annotations

from typing import Any

from farm.compat.blocks import drawn
from farm.compat.taskgen.blocks.jobs import Random, Variants

__all__ = ["HighRandom", "LowRandom", "MediumRandom", "Random", "Value", "Variants"]


def Value(numberofjobs: Any = 1) -> dict[str, Any]:
    return {"numberofjobs": numberofjobs}


HighRandom = drawn(Value, 1, 5)
MediumRandom = drawn(Value, 5, 10)
LowRandom = drawn(Value, 10, 20)
