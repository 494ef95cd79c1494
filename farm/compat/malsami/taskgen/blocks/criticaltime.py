"""``criticaltime`` blocks (malsami fork): whole seconds in ms (a list of 0..19 s as Variants)."""

from __future__ import annotations

from typing import Any

from farm.compat.blocks import drawn, spread


def Value(criticaltime: Any) -> dict[str, Any]:
    return {"criticaltime": criticaltime}


Variants = spread(Value, [x * 1000 for x in range(20)])
Random = drawn(Value, 1, 20, scale=1000)
HighRandom = drawn(Value, 14, 20, scale=1000)
MediumRandom = drawn(Value, 7, 14, scale=1000)
LowRandom = drawn(Value, 1, 7, scale=1000)
