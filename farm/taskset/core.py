"""TaskSet (tasks, binaries, RNG; a template or one concrete variant) and BlockTaskSet."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from farm.agent.pkgs import BUILTIN_PKGS, PROGRAM_PKGS, SHELL_PKG, TRAFFIC_PKGS
from farm.errors import ConfigError, TaskSetError
from farm.taskset.records import JobLog
from farm.taskset.task import Block, Task
from farm.taskset.validate import ATTRIBUTES, DEFAULTS, OPTIONAL, check_task, parse_quota
from farm.taskset.values import checkable, is_int, plain, short
from farm.taskset.variants import Plan, odometer

_BINARY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


class TaskSet(JobLog):
    """Tasks plus their binaries and RNG; a template of variants, or one concrete variant."""

    def __init__(
        self,
        tasks: Iterable[Mapping[str, Any]] | None = None,
        *,
        binaries: Mapping[str, str | PathLike[str]] | None = None,
        seed: int | str | None = None,
        name: str | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.name: str = name or type(self).__name__
        self.index: int | None = None  # ordinal of a variant; None for a template
        self._tasks: list[Task] = []
        self._binaries: dict[str, Path] = {}
        self._consumed = False
        self._init_records()
        for bin_name, path in (binaries or {}).items():
            self.add_binary(bin_name, path)
        for task in tasks or ():
            self.append(task)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, position: int) -> Task:
        return self._tasks[position]

    def __repr__(self) -> str:
        where = "" if self.index is None else f" #{self.index}"
        return f"<{self.name}{where}: {len(self._tasks)} tasks>"

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The tasks, in order."""
        return tuple(self._tasks)

    def append(self, task: Mapping[str, Any]) -> Task:
        """Add a copy of ``task``: bind its callable blocks with ``self.rng``, assign an id."""
        if not isinstance(task, Mapping):
            raise TaskSetError(
                f"task #{len(self._tasks) + 1}: a task must be a dict, got {short(task)}"
            )
        copy = Task(task).bind(self.rng)
        ids = [t["id"] for t in self._tasks if is_int(t.get("id"))]
        tid = copy.get("id")
        if tid is None:
            copy["id"] = max(ids, default=0) + 1
        elif is_int(tid) and tid in ids:
            raise TaskSetError(f"task {tid}: duplicate id {tid}", task=tid, attribute="id")
        self._tasks.append(copy)
        return copy

    def add_binary(self, name: str, path: str | PathLike[str]) -> None:
        """Register an uploaded binary: tasks may then use ``name`` as their pkg."""
        if not isinstance(name, str) or not _BINARY_NAME.fullmatch(name):
            raise ConfigError(f"binary name must match {_BINARY_NAME.pattern}, got {name!r}")
        if (
            name in BUILTIN_PKGS
            or name in TRAFFIC_PKGS
            or name in PROGRAM_PKGS
            or name == SHELL_PKG
        ):
            raise ConfigError(f"binary name {name!r} would shadow a built-in pkg")
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(f"binary {name!r}: {file} is not a file")
        self._binaries[name] = file.resolve()

    def binaries(self) -> dict[str, Path]:
        """Added binaries the tasks use as pkg (all of them if a pkg is a one-shot iterator)."""
        used: set[Any] | None = set()
        for task in self._tasks:
            values = checkable(task.get("pkg"))
            if values is None:
                used = None
                break
            used.update(v for v in values if isinstance(v, str))  # type: ignore[union-attr]
        out = {}
        for name, path in self._binaries.items():
            if used is None or name in used:
                if not path.is_file():
                    raise ConfigError(f"binary {name!r}: {path} is gone")
                out[name] = path
        return out

    # -- validation and variants -------------------------------------------------------------
    def validate(self) -> None:
        """Check every scalar and every value of every finite dimension; raise TaskSetError."""
        if not self._tasks:
            raise TaskSetError(f"task set {self.name} has no tasks")
        uploaded = frozenset(self._binaries)
        seen: set[int] = set()
        for pos, task in enumerate(self._tasks, 1):
            if task.pending:
                raise TaskSetError(f"task #{pos}: callable blocks not evaluated (use append)")
            check_task(task, pos, uploaded)
            tid = task.get("id")
            if tid in seen:
                raise TaskSetError(f"task {tid}: duplicate id {tid}", task=tid, attribute="id")
            if tid is not None:
                seen.add(tid)

    def is_concrete(self) -> bool:
        """True if no task has a dimension: the set is a single variant."""
        return all(task.is_concrete() for task in self._tasks)

    def variant_count(self) -> int | None:
        """Number of variants, or None if a dimension is unsized (iterator, generator)."""
        return Plan(self._tasks).count()

    def variants(self) -> Iterator[TaskSet]:
        """Validate, then yield every concrete variant lazily (``index`` 0, 1, ...).

        ``validate()`` checks every value of every finite dimension, so a
        variant is valid by construction; a task with a generator (or other
        unsized) dimension is checked again in each variant, as values are
        drawn. A TaskSetError from a drawn value ends the iteration.
        """
        self.validate()
        plan = Plan(self._tasks)
        if plan.one_shot:
            if self._consumed:
                raise TaskSetError(
                    f"task set {self.name}: its generators are used up; build it again"
                )
            self._consumed = True
        return self._generate(plan)

    def _generate(self, plan: Plan) -> Iterator[TaskSet]:
        uploaded = frozenset(self._binaries)
        for index, current in enumerate(odometer(plan.dimensions())):
            tasks = plan.build(current)
            for pos in plan.unchecked:  # the others were covered value by value by validate()
                check_task(tasks[pos], pos + 1, uploaded)
            yield self._variant(tasks, index)

    def _variant(self, tasks: list[Task], index: int) -> TaskSet:
        variant = TaskSet.__new__(TaskSet)
        variant.rng = self.rng
        variant.name = self.name
        variant.index = index
        variant._tasks = tasks
        variant._binaries = dict(self._binaries)
        variant._consumed = False
        variant._init_records()
        return variant

    def description(self) -> dict[str, Any]:
        """``{"tasks": [...]}`` with every attribute (defaults filled); concrete sets only.

        A task without a priority is described with ``"priority": 0``, the wire
        value for best effort (see ``farm.taskset.validate``).
        """
        if not self.is_concrete():
            raise TaskSetError(f"task set {self.name} has dimensions; describe its variants()")
        self.validate()
        tasks = []
        for task in self._tasks:
            d: dict[str, Any] = {"id": task["id"], "pkg": task["pkg"]}
            d["config"] = plain(task.get("config", {}))
            for key, default in DEFAULTS.items():
                d[key] = task.get(key, default)
            d["quota"] = parse_quota(d["quota"])
            d.update({k: task[k] for k in OPTIONAL if k in task})
            tasks.append({k: d[k] for k in ATTRIBUTES if k in d})
        return {"tasks": tasks}


class BlockTaskSet(TaskSet):
    """Task set built from blocks (taskgen style), with its own seeded RNG.

    Either every argument is a Task (each becomes one task), or every argument
    is a block or a list/tuple of alternative blocks: one task is made per
    combination of alternatives (first argument slowest), e.g.
    ``BlockTaskSet([hey.HelloWorld, pi.Value(10)], priority.Value(5))`` has two tasks.
    """

    def __init__(
        self,
        *tasks_or_blocks: Task | Block | list[Block] | tuple[Block, ...],
        seed: int | str | None = None,
        binaries: Mapping[str, str | PathLike[str]] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(binaries=binaries, seed=seed, name=name)
        tasks = [a for a in tasks_or_blocks if isinstance(a, Task)]
        if tasks and len(tasks) != len(tasks_or_blocks):
            raise ConfigError("BlockTaskSet takes either Tasks or blocks, not both")
        if tasks:
            for task in tasks:
                self.append(task)
            return
        choices = [list(a) if isinstance(a, list | tuple) else [a] for a in tasks_or_blocks]
        if tasks_or_blocks:
            for combination in _combinations(choices):
                self.append(Task(*combination))


def _combinations(choices: list[list[Any]]) -> Iterator[list[Any]]:
    if not choices:
        yield []
        return
    for head in choices[0]:
        for rest in _combinations(choices[1:]):
            yield [head, *rest]
