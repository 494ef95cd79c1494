"""The malsami fork's TaskSet: ids from 0, ``description()`` as ``{"taskset": tasks}``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from farm.compat.malsami.taskgen.task import Task
from farm.compat.taskgen import taskset as taskgen
from farm.compat.variants import is_concrete


class TaskSet(taskgen.TaskSet):
    """taskgen's container, but ``TaskSet(tasks)`` numbers the tasks 0, 1, ... too."""

    def __init__(self, tasks: Iterable[Task] = ()) -> None:
        super().__init__()
        for task in tasks:
            self.append(task)

    def description(self) -> dict[str, Any]:
        return {"taskset": self._tasks}

    def variants(self) -> Iterator[taskgen.TaskSet]:
        """Every variant (farm addition, as taskgen's): a set without ranges yields itself."""
        if all(_concrete(t) for t in self._tasks):
            yield self
            return
        yield from super().variants()

    def _variant(self, tasks: tuple[Any, ...]) -> TaskSet:
        variant = TaskSet()
        variant._tasks = [Task(t) for t in tasks]  # own copies: sets may run at once
        for task in variant._tasks:
            task.reset_jobs()
        variant._task_counter = len(tasks)
        return variant


def _concrete(task: Task) -> bool:
    return is_concrete({k: v for k, v in task.items() if k != "jobs"})


class BlockTaskSet(TaskSet):
    """taskgen's BlockTaskSet for the fork (the fork dropped it; same rule as taskgen's)."""

    def __init__(self, *block_combinations: Any, task_class: type[Task] = Task, seed: Any = None):
        super().__init__()
        taskgen.append_blocks(self, block_combinations, task_class, seed)
