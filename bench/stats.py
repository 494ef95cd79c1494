"""The one percentile definition of every bench figure (no farm imports).

Nearest rank: the p-th percentile of n values is the smallest value with at
least p % of the values <= it, ``sorted(values)[ceil(p / 100 * n) - 1]``.
Kept apart from common.py so that a script run against another checkout
(bench/compare.py --script-from after) can use it without importing farm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank ``p``-th percentile (``p`` in 0..100) of non-empty ``values``."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not in 0..100")
    ordered = sorted(values)
    rank = math.ceil(round(p * len(ordered) / 100, 9))  # round: float noise adds no rank
    return ordered[max(rank, 1) - 1]
