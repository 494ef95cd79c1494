# ruff: noqa: F403, F405  (the originals star-import their blocks)
"""taskgen's tasksets/nextgen/*.py, re-created from their descriptions.

all.py: Random1/10/100/1k/10k (random binaries, priorities, periods, job
counts), Repeatable* (the same with seed 0), RandomSize (1..100 random tasks);
benchmark.py: BenchmarkTask/BenchmarkTaskSet (a task with ``variants`` id
variants plus ``tasks - 1`` single ones); example.py: Hey0..Hey9 as in
tasksets/example.py with periods of 5 and 10 ms; noperiod.py: Hey, Hey10,
Manual (one-shot tasks, run until stopped); period.py and priority.py:
Low*/High* (random binaries, low or high random periods or priorities);
pi.py: Variants10/100/1m, ThreeVariants100.

Where the originals were broken, these use what they meant (docs/compat.md):
all.py's ``random.seed(seed)`` names the parameter ``_seed``, and its
uncalled ``priority.Custom`` (a value is needed) is ``priority.Random``.
"""

import random

from farm.compat.taskgen.blocks import *
from farm.compat.taskgen.task import Task
from farm.compat.taskgen.taskset import BlockTaskSet, TaskSet

# -- all.py ------------------------------------------------------------------------------------


class Random1(BlockTaskSet):
    def __init__(self, _seed=None, size=1):
        random.seed(_seed)
        super().__init__(
            binaries.RandomList(size, 1), priority.Random, period.Random, jobs.Random, seed=_seed
        )


def _sized(base, size, seed=None, name=None):
    def __init__(self, seed=seed):
        base.__init__(self, seed, size)

    return type(name, (base,), {"__init__": __init__})


Random10 = _sized(Random1, 10, name="Random10")
Random100 = _sized(Random1, 100, name="Random100")
Random1k = _sized(Random1, 1000, name="Random1k")
Random10k = _sized(Random1, 10000, name="Random10k")
Repeatable1 = _sized(Random1, 1, 0, "Repeatable1")
Repeatable10 = _sized(Random1, 10, 0, "Repeatable10")
Repeatable100 = _sized(Random1, 100, 0, "Repeatable100")
Repeatable1k = _sized(Random1, 1000, 0, "Repeatable1k")
Repeatable10k = _sized(Random1, 10000, 0, "Repeatable10k")


class RandomSize(BlockTaskSet):
    def __init__(self, _seed=None, size=1):
        random.seed(_seed)
        count = random.randint(1, 100)
        super().__init__(
            binaries.RandomList(count, 100), priority.Random, period.Random, seed=_seed
        )


# -- benchmark.py ------------------------------------------------------------------------------


class BenchmarkTask(Task):
    def __init__(self, variants):
        super().__init__()
        self.update(
            {
                "id": range(variants),
                "pkg": "hey",
                "config": {"arg1": 1},
                "quota": "1M",
                "priority": 128,
                "deadline": 0,
                "period": 0,
                "offset": 0,
                "numberofjobs": 0,
                "criticaltime": 0,
                "executiontime": 99999999,
            }
        )


class BenchmarkTaskSet(TaskSet):
    def __init__(self, variants=3, tasks=2):
        super().__init__()
        self.append(BenchmarkTask(int(variants)))
        for _ in range(int(tasks) - 1):
            self.append(BenchmarkTask(1))


# -- example.py --------------------------------------------------------------------------------


class NextHey0TaskSet(TaskSet):
    def __init__(self):
        super().__init__()
        self.append(
            Task(
                {
                    "id": 1,
                    "pkg": "hey",
                    "config": {},
                    "quota": "1M",
                    "priority": 10,
                    "period": 2000,
                    "numberofjobs": 0,
                    "criticaltime": 1000,
                    "executiontime": 1000,
                }
            )
        )


class NextHey1TaskSet(TaskSet):
    def __init__(self):
        super().__init__()
        self.append(Task(hey.HelloWorld, priority.Custom(100), period.Custom(5)))


class NextHey2TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__(hey.HelloWorld, priority.Custom(100), period.Custom(5))


class NextHey3TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__(
            hey.HelloWorld, priority.Custom(100), [period.Custom(5), period.Custom(10)]
        )


class NextHey4TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__(
            hey.HelloWorld,
            [priority.Custom(100), priority.Custom(100)],
            [period.Custom(5), period.Custom(10)],
        )


class NextHey5TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__(hey.HelloWorld, priority.Random, period.Custom(5))


class NextHey6TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__(hey.HelloWorld, priority.Variants, period.Custom(5))


class NextHey7TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__([hey.HelloWorld, hey.HelloWorld], priority.Variants, period.Random)


class NextHey8TaskSet(TaskSet):
    def __init__(self):
        super().__init__()
        for _ in range(10):
            self.append(Task(hey.HelloWorld, priority.Custom(100), period.Custom(5)))


class NextHey9TaskSet(TaskSet):
    def __init__(self):
        super().__init__()
        for _ in range(10):
            self.append(Task(hey.HelloWorld, priority.Random, period.Custom(5)))


# -- noperiod.py -------------------------------------------------------------------------------


class Hey(BlockTaskSet):
    def __init__(self, size=1):
        super().__init__([hey.HelloWorld] * size, priority.Random, period.Custom(0), jobs.Custom(0))


class Hey10(Hey):
    def __init__(self):
        super().__init__(10)


class Manual(TaskSet):
    def __init__(self):
        super().__init__()
        for tid, prio in ((1, 52), (2, 51)):
            self.append(
                Task(
                    {
                        "id": tid,
                        "pkg": "hey",
                        "config": {},
                        "quota": "1M",
                        "priority": prio,
                        "period": 0,
                        "numberofjobs": 0,
                        "criticaltime": 1000,
                        "executiontime": 1000,
                    }
                )
            )


# -- period.py and priority.py -----------------------------------------------------------------


def _mixed(name, prio, per, size):
    def __init__(self, seed=None):
        random.seed(seed)
        BlockTaskSet.__init__(self, binaries.RandomList(size, 1), prio, per)

    return type(name, (BlockTaskSet,), {"__init__": __init__})


PERIOD = {
    f"Period{level}{label}": _mixed(
        f"Period{level}{label}", priority.Random, getattr(period, f"{level}Random"), size
    )
    for level in ("Low", "High")
    for label, size in (("1", 1), ("10", 10), ("100", 100), ("1k", 1000))
}
PRIORITY = {
    f"Priority{level}{label}": _mixed(
        f"Priority{level}{label}", getattr(priority, f"{level}Random"), period.Random, size
    )
    for level in ("Low", "High")
    for label, size in (("1", 1), ("10", 10), ("100", 100), ("1k", 1000))
}

# -- pi.py -------------------------------------------------------------------------------------


def _pi(name, *blocks):
    def __init__(self, seed=None, size=1):
        random.seed(seed)
        BlockTaskSet.__init__(self, *blocks, priority.Random, period.MediumRandom)

    return type(name, (BlockTaskSet,), {"__init__": __init__})


Variants10 = _pi("Variants10", pi.Variants(10))
Variants100 = _pi("Variants100", pi.Variants(100))
Variants1m = _pi("Variants1m", pi.Variants(1000000))
ThreeVariants100 = _pi("ThreeVariants100", [pi.Variants(100)] * 3)
