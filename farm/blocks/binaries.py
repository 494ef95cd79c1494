"""Mixed workloads: one block per built-in workload, or one picked with the task set's RNG."""

from __future__ import annotations

import random
from typing import Any

from farm.blocks import cond_42, cond_mod, hey, idle, linpack, namaste, pi, tumatmul
from farm.taskset import Block


def All() -> list[Block]:
    """One small block per built-in workload (a list: one task each in a BlockTaskSet)."""
    return [
        hey.HelloWorld,
        namaste.Namaste,
        pi.Value(50),
        cond_42.Value(1000),
        cond_mod.Value(1001),
        linpack.Value(20),
        tumatmul.Value(10),
        idle.Value(10),
    ]


class RandomWorkload:
    """Callable block: one of ``All()`` picked with the task set's RNG."""

    def __call__(self, rng: random.Random) -> Any:
        return rng.choice(All())

    def __repr__(self) -> str:
        return "<random workload>"


def Random() -> RandomWorkload:
    """A workload picked at random (with the task set's RNG) when the task joins a set."""
    return RandomWorkload()


def RandomList(size: int) -> list[Block]:
    """``size`` random workloads: as a BlockTaskSet argument, ``size`` tasks."""
    return [RandomWorkload() for _ in range(size)]
