"""The malsami fork's blocks (``from taskgen.blocks import *``)."""

from farm.compat.malsami.taskgen.blocks import (
    binaries,
    caps,
    cond_42,
    cond_mod,
    criticaltime,
    deadline,
    hey,
    linpack,
    namaste,
    numberofjobs,
    offset,
    period,
    pi,
    priority,
    quota,
    tumatmul,
)

__all__ = [
    "binaries",
    "caps",
    "cond_42",
    "cond_mod",
    "criticaltime",
    "deadline",
    "hey",
    "linpack",
    "namaste",
    "numberofjobs",
    "offset",
    "period",
    "pi",
    "priority",
    "quota",
    "tumatmul",
]
