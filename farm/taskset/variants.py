"""Variants of a template: where its dimensions sit (Plan) and their lazy product (odometer).

The product runs last dimension fastest, except that one-shot iterators
(generators) come first, i.e. vary slowest: the first is consumed once,
uncached; any further ones must be replayed, so the values they yield are
cached. Sets vary in sorted order. Re-iterable dimensions are restarted,
never copied, so memory stays flat however many variants there are.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from farm.errors import TaskSetError
from farm.taskset.task import Task, concrete_task
from farm.taskset.values import END, checkable, is_dimension, size


class Dimension:
    """One axis of the odometer: restartable; a one-shot iterator is cached only if replayed."""

    def __init__(self, value: Any, replay: bool) -> None:
        if isinstance(value, set | frozenset):
            try:
                value = sorted(value)
            except TypeError:
                value = sorted(value, key=repr)
        self.value = value
        self.one_shot = isinstance(value, Iterator)
        self._cache: list[Any] | None = [] if replay and self.one_shot else None
        self._started = False

    def start(self) -> Iterator[Any]:
        """An iterator over the axis' values, from the first."""
        if not self.one_shot:
            return iter(self.value)
        if self._started:
            if self._cache is None:
                raise TaskSetError("internal: an uncached one-shot dimension was restarted")
            return iter(self._cache)
        self._started = True
        return self.value if self._cache is None else self._recording()

    def _recording(self) -> Iterator[Any]:
        assert self._cache is not None
        for v in self.value:
            self._cache.append(v)
            yield v


class Plan:
    """Where each dimension of a template sits, and how to build a concrete task list."""

    def __init__(self, tasks: list[Task]) -> None:
        slots: list[tuple[int, str, str | None, Any]] = []
        for pos, task in enumerate(tasks):
            for key, value in task.items():
                if key == "config" and isinstance(value, Mapping):
                    slots += [(pos, key, k, v) for k, v in value.items() if is_dimension(v)]
                elif is_dimension(value):
                    slots.append((pos, key, None, value))
        slots.sort(key=lambda s: not isinstance(s[3], Iterator))  # stable: one-shot ones first
        self.values = [s[3] for s in slots]
        self.one_shot = sum(isinstance(v, Iterator) for v in self.values)
        #: tasks with a dimension the template check could not cover (iterator, unsized)
        self.unchecked = sorted({s[0] for s in slots if checkable(s[3]) is None})
        self.specs: list[
            tuple[Task, dict[str, Any] | None, list[tuple[str, int]], list[tuple[str, int]]]
        ] = []
        for pos, task in enumerate(tasks):
            cfg = task.get("config")
            top = [(key, i) for i, (p, key, sub, _) in enumerate(slots) if p == pos and sub is None]
            inner = [(s, i) for i, (p, _, s, _) in enumerate(slots) if p == pos and s is not None]
            self.specs.append((task, dict(cfg) if isinstance(cfg, Mapping) else None, top, inner))

    def dimensions(self) -> list[Dimension]:
        """Fresh odometer axes (every one-shot iterator but the first is replayed)."""
        return [Dimension(v, replay=i > 0) for i, v in enumerate(self.values)]

    def count(self) -> int | None:
        """Number of variants, or None if a dimension is unsized."""
        sizes = [size(v) for v in self.values]
        if 0 in sizes:
            return 0
        if None in sizes:
            return None
        return math.prod(sizes)  # type: ignore[arg-type]

    def build(self, current: list[Any]) -> list[Task]:
        """The concrete tasks for one odometer reading."""
        tasks = []
        for template, cfg, top, inner in self.specs:
            values = dict(template)
            for key, i in top:
                values[key] = current[i]
            if cfg is not None:
                config = dict(cfg)
                for key, i in inner:
                    config[key] = current[i]
                values["config"] = config
            tasks.append(concrete_task(values))
        return tasks


def odometer(dims: list[Dimension]) -> Iterator[list[Any]]:
    """Yield the current value list of every combination (the list is reused: copy to keep)."""
    iters = [d.start() for d in dims]
    current = []
    for it in iters:
        first = next(it, END)
        if first is END:
            return
        current.append(first)
    while True:
        yield current
        k = len(dims) - 1
        while True:
            if k < 0:
                return
            value = next(iters[k], END)
            if value is not END:
                current[k] = value
                break
            if k == 0:
                return
            iters[k] = dims[k].start()
            value = next(iters[k], END)
            if value is END:
                return
            current[k] = value
            k -= 1
