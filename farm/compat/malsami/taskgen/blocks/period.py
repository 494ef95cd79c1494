"""``period`` blocks (malsami fork)."""

from __future__ import annotations

import random
from typing import Any


def Value(period: Any) -> dict[str, Any]:
    return {"period": period}


def Variants() -> dict[str, Any]:
    return Value(range(20))


def Random() -> dict[str, Any]:
    return Value(random.randint(1000, 20000))


def HighRandom() -> dict[str, Any]:
    return Value(random.randint(1000, 3000))


def MediumRandom() -> dict[str, Any]:
    return Value(random.randint(4000, 10000))


def LowRandom() -> dict[str, Any]:
    return Value(random.randint(10000, 20000))
