"""Task blocks (taskgen's): dicts, or callables drawing values with the task set's RNG.

Workloads: ``hey``, ``namaste``, ``pi``, ``cond_42``, ``cond_mod``,
``linpack``, ``tumatmul``, ``idle``, ``memhog``, ``shell``, ``binaries``
(mixes). Attributes: ``priority``, ``period``, ``jobs`` (numberofjobs),
``offset``, ``deadline``, ``critical`` (criticaltime), ``quota``. Attribute
modules offer ``Value(v)``, ``Variants(values)`` (a dimension) and
``Random(lo, hi[, count])`` (drawn when the task joins a set; ``count``
draws make a dimension)::

    from farm.blocks import hey, period, priority
    Task(hey.HelloWorld, priority.Random(1, 127), period.Variants([10, 20]))
"""

from farm.blocks import (
    binaries,
    cond_42,
    cond_mod,
    critical,
    deadline,
    hey,
    idle,
    jobs,
    linpack,
    memhog,
    namaste,
    offset,
    period,
    pi,
    priority,
    quota,
    shell,
    tumatmul,
)

__all__ = [
    "binaries",
    "cond_42",
    "cond_mod",
    "critical",
    "deadline",
    "hey",
    "idle",
    "jobs",
    "linpack",
    "memhog",
    "namaste",
    "offset",
    "period",
    "pi",
    "priority",
    "quota",
    "shell",
    "tumatmul",
]
