# ruff: noqa: F403, F405  (the originals star-import their blocks)
"""The malsami distributor's test.py task building, re-created from its description.

``exampleTest``: five tasks (hey with 5 jobs every 5 s, pi, cond_42,
cond_mod, linpack with arg1 5), priority 0, 5 MB quota, 50 caps (once as a
block, then as a plain dict). ``example5``: the same with priorities 127, 2,
3, 4, 0 and ``Variants(5)`` arguments.
"""

from farm.compat.malsami.taskgen.blocks import *
from farm.compat.malsami.taskgen.task import Task
from farm.compat.malsami.taskgen.taskset import TaskSet

WORKLOADS = ("pi", "cond_42", "cond_mod", "linpack")


def exampleTest():
    tasks = TaskSet([])
    tasks.append(
        Task(
            hey.Value(1),
            period.Value(5000),
            priority.Value(0),
            numberofjobs.Value(5),
            quota.Value(5),
            caps.Value(50),
        )
    )
    for name in WORKLOADS:
        block = globals()[name].Value(5)
        tasks.append(Task(block, period.Value(0), priority.Value(0), quota.Value(5), {"caps": 50}))
    return tasks


def example5():
    tasks = TaskSet([])
    tasks.append(
        Task(
            hey.Value(1),
            period.Value(5000),
            priority.Value(127),
            numberofjobs.Value(5),
            quota.Value(5),
            {"caps": 50},
        )
    )
    for name, prio in zip(WORKLOADS, (2, 3, 4, 0), strict=True):
        block = globals()[name].Variants(5)
        tasks.append(
            Task(block, period.Value(0), priority.Value(prio), quota.Value(5), {"caps": 50})
        )
    return tasks
