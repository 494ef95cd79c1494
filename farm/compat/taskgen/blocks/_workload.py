"""The shape every argument-taking workload block of taskgen shares."""

from __future__ import annotations

import random
from typing import Any


def value(pkg: str, arg1: Any) -> dict[str, Any]:
    """``pkg`` with ``config.arg1``, 1 MiB quota."""
    return {"pkg": pkg, "quota": "1M", "config": {"arg1": arg1}}


def rand(pkg: str, n: int) -> dict[str, Any]:
    """``arg1`` drawn from 1..n."""
    return value(pkg, random.randint(1, n))


def variants(pkg: str, n: int) -> dict[str, Any]:
    """``arg1`` over ``range(n)``: n variants."""
    return value(pkg, range(n))
