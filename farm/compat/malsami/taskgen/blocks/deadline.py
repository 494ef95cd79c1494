"""``deadline`` blocks (malsami fork)."""

from __future__ import annotations

import random
from typing import Any


def Value(deadline: Any) -> dict[str, Any]:
    return {"deadline": deadline}


def Variants() -> dict[str, Any]:
    return Value([1000 * x for x in range(20)])


def Random() -> dict[str, Any]:
    return Value(1000 * random.randint(1, 20))


def HighRandom() -> dict[str, Any]:
    return Value(1000 * random.randint(14, 20))


def MediumRandom() -> dict[str, Any]:
    return Value(1000 * random.randint(7, 14))


def LowRandom() -> dict[str, Any]:
    return Value(1000 * random.randint(1, 7))
