"""Example task sets (taskgen's, kept short: each variant takes well under a second).

Periods are 100 ms or more so that a job (a fresh process) fits in its
period on a host; fixed priorities stay within Linux's SCHED_FIFO 1..99.
"""

from __future__ import annotations

from farm.blocks import binaries, cond_mod, hey, idle, jobs, period, pi, priority, shell
from farm.taskset import BlockTaskSet, Task, TaskSet


class Hey0TaskSet(TaskSet):
    """One `hey` task, written as a plain dict: 1 variant."""

    def __init__(self) -> None:
        super().__init__()
        self.append(
            Task(
                {
                    "id": 1,
                    "pkg": "hey",
                    "config": {},
                    "priority": 10,
                    "period": 0,
                    "numberofjobs": 1,
                }
            )
        )


class Hey1TaskSet(TaskSet):
    """One `hey` task built from blocks, periods of 50, 100 or 200 ms, 2 jobs: 3 variants."""

    def __init__(self) -> None:
        super().__init__()
        self.append(
            Task(hey.HelloWorld, priority.Value(10), period.Variants([50, 100, 200]), jobs.Value(2))
        )


class Hey2TaskSet(BlockTaskSet):
    """Two `hey` tasks from block alternatives (periods 100 and 200 ms, 2 jobs each): 1 variant."""

    def __init__(self) -> None:
        super().__init__(
            hey.HelloWorld,
            priority.Value(20),
            [period.Value(100), period.Value(200)],
            jobs.Value(2),
        )


class PiTaskSet(TaskSet):
    """One `pi` task computing 10, 100 or 500 digits: 3 variants."""

    def __init__(self) -> None:
        super().__init__()
        self.append(Task(pi.Variants([10, 100, 500]), priority.Value(50)))


class PeriodicTaskSet(TaskSet):
    """A `hey` task every 100 ms (3 jobs) and a `cond_mod` task every 200 ms (2 jobs): 1 variant."""

    def __init__(self) -> None:
        super().__init__()
        self.append(Task(hey.HelloWorld, priority.Value(30), period.Value(100), jobs.Value(3)))
        self.append(
            Task(cond_mod.Value(1001), priority.Value(20), period.Value(200), jobs.Value(2))
        )


class VariantsTaskSet(TaskSet):
    """A periodic `hey` and a one-shot `idle` task; hey priority x idle length vary: 4 variants."""

    def __init__(self) -> None:
        super().__init__()
        self.append(
            Task(hey.HelloWorld, priority.Variants([10, 90]), period.Value(100), jobs.Value(2))
        )
        self.append(Task(idle.Variants([5, 20]), priority.Value(50)))


class RandomTaskSet(BlockTaskSet):
    """Three random workloads, random priorities (1..99) and periods (100..200 ms): 1 variant."""

    def __init__(self, seed: int | str | None = None) -> None:
        super().__init__(
            binaries.RandomList(3),
            priority.Random(1, 99),
            period.Random(100, 200),
            jobs.Value(2),
            seed=seed,
        )


class EdfTaskSet(TaskSet):
    """An EDF `hey` task (priority 128, deadline 100 ms) and a fixed-priority one: 1 variant."""

    def __init__(self) -> None:
        super().__init__()
        self.append(
            Task(hey.HelloWorld, priority.EDF, period.Value(100), jobs.Value(2), {"deadline": 100})
        )
        self.append(Task(hey.HelloWorld, priority.Value(50), period.Value(100), jobs.Value(2)))


class AllPkgsTaskSet(BlockTaskSet):
    """One task per built-in workload plus a shell command, small arguments: 1 variant."""

    def __init__(self) -> None:
        super().__init__([*binaries.All(), shell.Command("echo farm")], priority.Value(40))


class ExperimentTaskSet(TaskSet):
    """The main-job demo: periodic `hey` + `pi` with deadlines; priorities x pi digits: 9 variants.

    Each variant runs 4 jobs of a 100 ms `hey` task and 3 jobs of a 200 ms
    `pi` task whose critical time (40 ms) the larger digit counts can miss
    under TCG, so the results show both EXIT and EXIT_CRITICAL.
    """

    def __init__(self) -> None:
        super().__init__()
        self.append(
            Task(hey.HelloWorld, priority.Variants([10, 50, 90]), period.Value(100), jobs.Value(4))
        )
        self.append(
            Task(
                pi.Variants([50, 400, 1500]),
                priority.Value(40),
                period.Value(200),
                jobs.Value(3),
                {"criticaltime": 40},
            )
        )
