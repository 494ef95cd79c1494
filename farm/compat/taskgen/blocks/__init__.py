"""taskgen's blocks (``from taskgen.blocks import *``): dicts, or functions returning dicts.

``Value(x)`` sets a value, ``Variants(n)`` makes a dimension (``range(n)``),
``Random(n)`` draws 1..n with the ``random`` module (seeded by BlockTaskSet).
"""

from farm.compat.taskgen.blocks import (
    binaries,
    cond_42,
    cond_mod,
    critical,
    hey,
    idle,
    jobs,
    linpack,
    period,
    pi,
    priority,
    tumatmul,
)

__all__ = [
    "binaries",
    "cond_42",
    "cond_mod",
    "critical",
    "hey",
    "idle",
    "jobs",
    "linpack",
    "period",
    "pi",
    "priority",
    "tumatmul",
]
