"""Quota blocks: memory limit in bytes or a size like "512K", "1M", "2G" (0 = unlimited)."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import value, variants
from farm.taskset import parse_quota


def Value(quota: int | str) -> dict[str, Any]:
    """Fixed memory limit (checked now: bytes or a size like "1M")."""
    parse_quota(quota)
    return value("quota", quota)


def Variants(values: Any) -> dict[str, Any]:
    """One variant per quota in ``values``."""
    return variants("quota", values)
