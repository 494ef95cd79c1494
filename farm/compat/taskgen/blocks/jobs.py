"""``numberofjobs`` blocks (used by taskgen's nextgen sets; 0 = until stopped)."""

from __future__ import annotations

from typing import Any

from farm.compat.blocks import drawn, spread


def Value(n: Any) -> dict[str, Any]:
    return {"numberofjobs": n}


Custom = Value
Variants = spread(Value, range(1, 20))
Random = drawn(Value, 1, 20)
