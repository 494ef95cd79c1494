"""Mixed workload blocks (taskgen): every workload with random arguments, or a random pick."""

from __future__ import annotations

from typing import Any

from farm.compat.blocks import random_list
from farm.compat.taskgen.blocks import cond_42, cond_mod, hey, idle, linpack, pi, tumatmul


def Random(par1_max: int) -> list[Any]:
    """One block per workload, arguments drawn from 1..par1_max."""
    return [
        hey.HelloWorld,
        cond_mod.Random(par1_max),
        cond_42.Random(par1_max),
        idle.Idle,
        pi.Random(par1_max),
        linpack.Random(par1_max),
        tumatmul.Random(par1_max),
    ]


RandomList = random_list(Random)  # ``size`` blocks picked at random from ``Random(par1_max)``
