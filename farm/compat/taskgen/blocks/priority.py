"""Priority blocks (taskgen: Genode priorities, a smaller number is more urgent; 128 = EDF)."""

from __future__ import annotations

from typing import Any

from farm.compat.blocks import drawn, spread


def Value(priority: Any) -> dict[str, Any]:
    return {"priority": priority}


Custom = Value  # what taskgen's own docstrings and nextgen sets call it
Variants = spread(Value, range(1, 128))
Random = drawn(Value, 1, 128)
HighRandom = drawn(Value, 1, 42)
MediumRandom = drawn(Value, 42, 84)
LowRandom = drawn(Value, 84, 128)
