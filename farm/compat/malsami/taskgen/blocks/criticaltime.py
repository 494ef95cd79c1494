"""``criticaltime`` blocks (malsami fork)."""

from __future__ import annotations

import random
from typing import Any


def Value(criticaltime: Any) -> dict[str, Any]:
    return {"criticaltime": criticaltime}


def Variants() -> dict[str, Any]:
    return Value([x * 1000 for x in range(20)])


def Random() -> dict[str, Any]:
    return Value(1000 * random.randint(1, 20))


def HighRandom() -> dict[str, Any]:
    return Value(1000 * random.randint(14, 20))


def MediumRandom() -> dict[str, Any]:
    return Value(1000 * random.randint(7, 14))


def LowRandom() -> dict[str, Any]:
    return Value(1000 * random.randint(1, 7))
