"""``numberofjobs`` blocks (used by taskgen's nextgen sets; 0 = until stopped)."""

from __future__ import annotations

import random
from typing import Any


def Value(n: Any) -> dict[str, Any]:
    return {"numberofjobs": n}


Custom = Value


def Variants() -> dict[str, Any]:
    return Value(range(1, 20))


def Random() -> dict[str, Any]:
    return Value(random.randint(1, 20))
