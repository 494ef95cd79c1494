"""``offset`` blocks (malsami fork)."""

from __future__ import annotations

import random
from typing import Any


def Value(offset: Any) -> dict[str, Any]:
    return {"offset": offset}


def Variants() -> dict[str, Any]:
    return Value(range(1000, 20000, 1000))


def Random() -> dict[str, Any]:
    return Value(random.randint(1000, 20000))


def HighRandom() -> dict[str, Any]:
    return Value(random.randint(10000, 20000))


def MediumRandom() -> dict[str, Any]:
    return Value(random.randint(5000, 10000))


def LowRandom() -> dict[str, Any]:
    return Value(random.randint(1000, 5000))
