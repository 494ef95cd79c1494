"""``tumatmul`` block (taskgen): Value(arg1), Random(n) = 1..n, Variants(n) = range(n)."""

from __future__ import annotations

from farm.compat.blocks import workload

Value, Random, Variants = workload("tumatmul", first=0, quota="1M")
