# ruff: noqa: F403, F405  (the originals star-import their blocks)
"""taskgen's tasksets/example.py, re-created from its description: Hey0..Hey9.

Hey0 a dict task; Hey1 the same from blocks; Hey2 a BlockTaskSet; Hey3 two
periods (two tasks); Hey4 two priorities x two periods (four tasks); Hey5 a
random priority; Hey6 every priority (a dimension: 127 variants); Hey7 two
tasks, every priority each, random period; Hey8 ten equal tasks; Hey9 ten
tasks with random priorities.
"""

from farm.compat.taskgen.blocks import *
from farm.compat.taskgen.task import Task
from farm.compat.taskgen.taskset import BlockTaskSet, TaskSet


class Hey0TaskSet(TaskSet):
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
                    "period": 0,
                    "criticaltime": 0,
                    "executiontime": 99999999,
                }
            )
        )


class Hey1TaskSet(TaskSet):
    def __init__(self):
        super().__init__()
        self.append(Task(hey.HelloWorld, priority.Value(100), period.Value(0)))


class Hey2TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__(hey.HelloWorld, priority.Value(100), period.Value(0))


class Hey3TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__(hey.HelloWorld, priority.Value(100), [period.Value(0), period.Value(5)])


class Hey4TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__(
            hey.HelloWorld,
            [priority.Value(100), priority.Value(100)],
            [period.Value(0), period.Value(5)],
        )


class Hey5TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__(hey.HelloWorld, priority.Random, period.Value(5))


class Hey6TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__(hey.HelloWorld, priority.Variants, period.Value(0))


class Hey7TaskSet(BlockTaskSet):
    def __init__(self):
        super().__init__([hey.HelloWorld, hey.HelloWorld], priority.Variants, period.Random)


class Hey8TaskSet(TaskSet):
    def __init__(self):
        super().__init__()
        for _ in range(10):
            self.append(Task(hey.HelloWorld, priority.Value(100), period.Value(0)))


class Hey9TaskSet(TaskSet):
    def __init__(self):
        super().__init__()
        for _ in range(10):
            self.append(Task(hey.HelloWorld, priority.Random, period.Value(0)))
