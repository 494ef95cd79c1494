"""``offset`` blocks (malsami fork, milliseconds)."""

from __future__ import annotations

from typing import Any

from farm.compat.blocks import drawn, spread


def Value(offset: Any) -> dict[str, Any]:
    return {"offset": offset}


Variants = spread(Value, range(1000, 20000, 1000))
Random = drawn(Value, 1000, 20000)
HighRandom = drawn(Value, 10000, 20000)
MediumRandom = drawn(Value, 5000, 10000)
LowRandom = drawn(Value, 1000, 5000)
