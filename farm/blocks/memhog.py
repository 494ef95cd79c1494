"""``memhog``: allocates and touches ``bytes`` bytes of memory (see also ``quota``)."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import RandomBlock, random_arg, variants, workload
from farm.taskset import parse_quota


def Value(size: int | str) -> dict[str, Any]:
    """``memhog`` of ``size`` bytes (an int, or a size like "4M")."""
    return workload("memhog", bytes=parse_quota(size))


def Variants(values: Any) -> dict[str, Any]:
    """One ``memhog`` variant per byte count in ``values``."""
    return {**workload("memhog"), "config": variants("bytes", values)}


def Random(lo: int = 1 << 10, hi: int = 1 << 20, count: int | None = None) -> RandomBlock:
    """``memhog`` with ``bytes`` drawn from [lo, hi] with the task set's RNG."""
    return random_arg("memhog", "bytes", lo, hi, count)
