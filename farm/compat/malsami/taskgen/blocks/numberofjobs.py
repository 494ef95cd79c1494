"""``numberofjobs`` blocks (malsami fork)."""

from __future__ import annotations

import random
from typing import Any


def Value(numberofjobs: Any = 1) -> dict[str, Any]:
    return {"numberofjobs": numberofjobs}


def Variants() -> dict[str, Any]:
    return Value(range(1, 20))


def Random() -> dict[str, Any]:
    return Value(random.randint(1, 20))


def HighRandom() -> dict[str, Any]:
    return Value(random.randint(1, 5))


def MediumRandom() -> dict[str, Any]:
    return Value(random.randint(5, 10))


def LowRandom() -> dict[str, Any]:
    return Value(random.randint(10, 20))
