"""taskgen's TaskSet and BlockTaskSet (``taskgen.taskset``): ids from 0, variants by product."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from typing import Any

from farm.compat.taskgen.task import BlockTask, Task
from farm.compat.variants import lazy_product


class TaskSet(Iterable[Any]):
    """Container of tasks; ``append`` numbers them 0, 1, ... (each instance has its own list).

    ``TaskSet(tasks)`` keeps the tasks' ids, as taskgen did. The malsami fork's
    TaskSet is a subclass differing in numbering, ``description`` and variants.
    """

    def __init__(self, tasks: Iterable[Any] | None = None) -> None:
        self._tasks: list[Any] = list(tasks) if tasks is not None else []
        self._task_counter = 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __str__(self) -> str:
        return str(self._tasks)

    def __repr__(self) -> str:
        return str(self)

    def append(self, task: BlockTask) -> None:
        task.id = self._task_counter
        self._task_counter += 1
        self._tasks.append(task)

    def variants(self) -> Iterator[TaskSet]:
        """Every variant: the product of the tasks' variants (last task fastest), as copies."""
        for tasks in lazy_product([t.variants for t in self._tasks]):
            yield self._variant(tasks)

    def _variant(self, tasks: tuple[Any, ...]) -> TaskSet:
        return TaskSet([Task(t) for t in tasks])  # own copies: sets may run at once

    def description(self) -> dict[str, Any]:
        return {"taskset": {"periodictask": self._tasks}}

    def binaries(self) -> set[Any]:
        return {t.binary() for t in self._tasks}


def append_blocks(
    taskset: TaskSet, block_combinations: tuple[Any, ...], task_class: type[BlockTask], seed: Any
) -> None:
    """BlockTaskSet's rule: one task per combination of blocks (a list gives alternatives).

    ``seed`` seeds the ``random`` module first, so random blocks repeat.
    """
    random.seed(seed)
    choices = [b if isinstance(b, list) else [b] for b in block_combinations]
    for blocks in itertools.product(*choices):
        taskset.append(task_class(*blocks))


class BlockTaskSet(TaskSet):
    """One task per combination of blocks: a list argument gives alternatives.

    ``seed`` seeds the ``random`` module first, so random blocks repeat.
    """

    def __init__(self, *block_combinations: Any, task_class: type[Task] = Task, seed: Any = None):
        super().__init__()
        append_blocks(self, block_combinations, task_class, seed)
