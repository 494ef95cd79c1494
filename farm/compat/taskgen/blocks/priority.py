"""Priority blocks (taskgen: Genode priorities, a smaller number is more urgent; 128 = EDF)."""

from __future__ import annotations

import random
from typing import Any


def Value(priority: Any) -> dict[str, Any]:
    return {"priority": priority}


Custom = Value  # what taskgen's own docstrings and nextgen sets call it


def Variants() -> dict[str, Any]:
    return Value(range(1, 128))


def Random() -> dict[str, Any]:
    return Value(random.randint(1, 128))


def HighRandom() -> dict[str, Any]:
    return Value(random.randint(1, 42))


def MediumRandom() -> dict[str, Any]:
    return Value(random.randint(42, 84))


def LowRandom() -> dict[str, Any]:
    return Value(random.randint(84, 128))
