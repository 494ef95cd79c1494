"""``pi`` block (malsami fork): Value(arg1), Random(n) = 1..n, Variants(n) = range(1, n)."""

from __future__ import annotations

from farm.compat.blocks import workload

Value, Random, Variants = workload("pi", first=1)
