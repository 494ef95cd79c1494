"""taskgen's tasksets/test.py, re-created from its description: Problem0..Problem6.

Hand-written dict tasks of the hey (and one cond_42) binary probing
numberofjobs, priorities, a hang, and EDF deadlines; most run until stopped
(numberofjobs 0).
"""

from farm.compat.taskgen.task import Task
from farm.compat.taskgen.taskset import TaskSet


def _hey(**values):
    task = {
        "pkg": "hey",
        "config": {},
        "quota": "1M",
        "criticaltime": 0,
        "executiontime": 99999999,
        "numberofjobs": 0,
        "period": 0,
    }
    task.update(values)
    return Task(task)


class _Problem(TaskSet):
    tasks: tuple = ()

    def __init__(self):
        super().__init__()
        for values in self.tasks:
            self.append(_hey(**values))


class Problem0(_Problem):
    tasks = ({"period": 3, "priority": 10},)


class Problem1(_Problem):
    tasks = (
        {"numberofjobs": 2, "period": 3, "priority": 50},
        {"numberofjobs": 2, "period": 3, "priority": 100},
    )


class Problem2(Problem1):
    pass


class Problem3(_Problem):
    tasks = (
        {"executiontime": 9999999999999999, "priority": 4},
        {
            "executiontime": 9999999999999999,
            "priority": 20,
            "pkg": "cond_42",
            "config": {"arg1": 30},
        },
    )


class Problem4(_Problem):
    tasks = ({"executiontime": 9999999999999999, "deadline": 10000},)


class Problem5(_Problem):
    tasks = ({"executiontime": 9999999999999999, "period": 3, "deadline": 10000000},)


class Problem6(_Problem):
    tasks = (
        {"executiontime": 9999999999999999, "deadline": 20000000},
        {"executiontime": 9999999999999999, "deadline": 10000000},
    )
