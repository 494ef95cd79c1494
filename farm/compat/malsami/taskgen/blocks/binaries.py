"""Mixed workload blocks (malsami fork)."""

from __future__ import annotations

from typing import Any

from farm.compat.blocks import random_list
from farm.compat.malsami.taskgen.blocks import (
    cond_42,
    cond_mod,
    hey,
    linpack,
    namaste,
    pi,
    tumatmul,
)


def Random(par1_max: int) -> list[Any]:
    """One block per workload (hey and namaste get ``par1_max`` as arg1)."""
    return [
        hey.Value(par1_max),
        cond_mod.Random(par1_max),
        cond_42.Random(par1_max),
        namaste.Value(par1_max),
        pi.Random(par1_max),
        linpack.Random(par1_max),
        tumatmul.Random(par1_max),
    ]


RandomList = random_list(Random)  # ``size`` blocks picked at random from ``Random(par1_max)``
