"""``cond_42``: counts to ``count`` (agent default 100000); stops at once if ``arg`` is 42."""

from __future__ import annotations

from typing import Any

from farm.blocks._make import RandomBlock, random_arg, variants, workload


def Value(arg: int, count: int | None = None) -> dict[str, Any]:
    """``cond_42`` with ``arg`` (and how far to count unless arg is 42)."""
    if count is None:
        return workload("cond_42", arg=arg)
    return workload("cond_42", arg=arg, count=count)


def Variants(values: Any) -> dict[str, Any]:
    """One ``cond_42`` variant per ``arg`` in ``values``."""
    return {**workload("cond_42"), "config": variants("arg", values)}


def Random(lo: int = 1, hi: int = 1000, count: int | None = None) -> RandomBlock:
    """``cond_42`` with ``arg`` drawn from [lo, hi] with the task set's RNG."""
    return random_arg("cond_42", "arg", lo, hi, count)


def Break() -> dict[str, Any]:
    """``cond_42`` that stops at once (arg 42)."""
    return Value(42)
