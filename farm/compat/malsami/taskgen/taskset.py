"""The malsami fork's TaskSet: ids from 0, ``description()`` as ``{"taskset": tasks}``."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from farm.compat.malsami.taskgen.task import Task
from farm.compat.variants import lazy_product


class TaskSet(Iterable[Task]):
    """Container of tasks; ``TaskSet(tasks)`` and ``append`` number them 0, 1, ..."""

    def __init__(self, tasks: Iterable[Task] = ()) -> None:
        self._tasks: list[Task] = []
        self._task_counter = 0
        for task in tasks:
            self.append(task)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __str__(self) -> str:
        return str(self._tasks)

    def __repr__(self) -> str:
        return str(self)

    def append(self, task: Task) -> None:
        task.id = self._task_counter
        self._task_counter += 1
        self._tasks.append(task)

    def description(self) -> dict[str, Any]:
        return {"taskset": self._tasks}

    def binaries(self) -> set[Any]:
        return {t.binary() for t in self._tasks}

    def variants(self) -> Iterator[TaskSet]:
        """Every variant (farm addition, as taskgen's): a set without ranges yields itself."""
        if all(_concrete(t) for t in self._tasks):
            yield self
            return
        for tasks in lazy_product([t.variants for t in self._tasks]):
            variant = TaskSet()
            variant._tasks = [Task(t) for t in tasks]  # own copies: sets may run at once
            for task in variant._tasks:
                task.reset_jobs()
            variant._task_counter = len(tasks)
            yield variant


def _concrete(task: Task) -> bool:
    from farm.compat.variants import is_concrete

    return is_concrete({k: v for k, v in task.items() if k != "jobs"})


class BlockTaskSet(TaskSet):
    """taskgen's BlockTaskSet for the fork (the fork dropped it; same rule as taskgen's)."""

    def __init__(self, *block_combinations: Any, task_class: type[Task] = Task, seed: Any = None):
        import random

        super().__init__()
        random.seed(seed)
        choices = [b if isinstance(b, list) else [b] for b in block_combinations]
        for blocks in itertools.product(*choices):
            self.append(task_class(*blocks))
