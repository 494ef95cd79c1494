"""``priority`` blocks (malsami fork)."""

from __future__ import annotations

import random
from typing import Any


def Value(priority: Any) -> dict[str, Any]:
    return {"priority": priority}


def Variants() -> dict[str, Any]:
    return Value(range(0, 127))


def Random() -> dict[str, Any]:
    return Value(random.randint(1, 127))


def HighRandom() -> dict[str, Any]:
    return Value(random.randint(0, 42))


def MediumRandom() -> dict[str, Any]:
    return Value(random.randint(42, 84))


def LowRandom() -> dict[str, Any]:
    return Value(random.randint(84, 127))
