"""``hey`` block (malsami fork): Value(arg1), Random(n) = 1..n, Variants(n) = range(1, n)."""

from __future__ import annotations

import random
from typing import Any


def Value(arg1: Any) -> dict[str, Any]:
    return {"pkg": "hey", "config": {"arg1": arg1}}


def Random(n: int) -> dict[str, Any]:
    return Value(random.randint(1, n))


def Variants(variants: int) -> dict[str, Any]:
    return Value(range(1, variants))
