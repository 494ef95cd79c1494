"""Period blocks (taskgen, milliseconds)."""

from __future__ import annotations

from typing import Any

from farm.compat.blocks import drawn, spread


def Value(period: Any) -> dict[str, Any]:
    return {"period": period}


Custom = Value  # what taskgen's own docstrings and nextgen sets call it
Variants = spread(Value, range(20))
Random = drawn(Value, 1, 20)
HighRandom = drawn(Value, 1, 5)
MediumRandom = drawn(Value, 5, 10)
LowRandom = drawn(Value, 10, 20)
