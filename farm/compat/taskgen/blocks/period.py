"""Period blocks (taskgen, milliseconds)."""

from __future__ import annotations

import random
from typing import Any


def Value(period: Any) -> dict[str, Any]:
    return {"period": period}


Custom = Value  # what taskgen's own docstrings and nextgen sets call it


def Variants() -> dict[str, Any]:
    return Value(range(20))


def Random() -> dict[str, Any]:
    return Value(random.randint(1, 20))


def HighRandom() -> dict[str, Any]:
    return Value(random.randint(1, 5))


def MediumRandom() -> dict[str, Any]:
    return Value(random.randint(5, 10))


def LowRandom() -> dict[str, Any]:
    return Value(random.randint(10, 20))
