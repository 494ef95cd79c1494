"""Original-shaped tasks -> farm tasks, the submission source, and the monitor wrapper.

The originals' tasks are Genode task descriptions. Genode's Taskloader
(argos-research/genode-Taskloader, src/taskloader/task.cc) gives a task the
CPU priority ``(128 - priority) * (PRIORITY_LIMIT / 128)``, and a lower Genode
CPU priority value is the more urgent: a LARGER task ``priority`` is the more
urgent, as on farm's agents (1..127 fixed, 128 EDF). So a fixed priority runs
unchanged on farm's agents; 0 (Genode's lowest) runs as 1, farm's lowest. A
Genode session is sent the original task dicts as the originals sent them
(``genode_tasks``). Attributes farm's own agents have no use for (``caps``,
``cores``, ``coreoffset``) travel as ``x-`` annotations; ``jobs`` (filled at
run time) is never sent.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from farm.events import Event
from farm.taskset import TaskSet as FarmTaskSet
from farm.taskset.task import concrete_task

log = logging.getLogger(__name__)

EDF = 128
#: farm attributes copied as they are when not None
_PLAIN = ("period", "executiontime", "criticaltime", "deadline", "offset", "numberofjobs", "quota")
#: built-in workloads whose first config value must be >= 1 on farm (taskgen's Variants start at 0)
_AT_LEAST_ONE = frozenset({"pi", "linpack", "tumatmul"})
_DROPPED = frozenset({"jobs"})
_ids = itertools.count(1)


def farm_priority(priority: Any) -> Any:
    """An original (Genode Taskloader) priority as farm's: same order, 0 (the lowest) as 1."""
    if isinstance(priority, int) and not isinstance(priority, bool) and priority == 0:
        return 1
    return priority  # 1..127 fixed, 128 (EDF) and anything farm's validation should name


def genode_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """One original task as the originals' GenodeSession sent it: as it is, without ``jobs``.

    A hand-written ``critical-time`` (argos taskgen's critical block wrote it)
    is sent as ``criticaltime``, the element the Taskloader reads.
    """
    out = {k: v for k, v in task.items() if k not in _DROPPED and k != "critical-time"}
    if task.get("critical-time") is not None and out.get("criticaltime") is None:
        out["criticaltime"] = task["critical-time"]
    return out


def farm_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """One concrete original task as a farm task dict (see the module docstring)."""
    out: dict[str, Any] = {"id": task.get("id"), "pkg": task.get("pkg")}
    config = task.get("config")
    cfg = {k: v for k, v in (config or {}).items() if v is not None}
    if out["pkg"] in _AT_LEAST_ONE and isinstance(cfg.get("arg1"), int) and cfg["arg1"] < 1:
        cfg["arg1"] = 1
    out["config"] = cfg
    if task.get("priority") is not None:
        out["priority"] = farm_priority(task["priority"])
    for key in _PLAIN:
        if task.get(key) is not None:
            out[key] = task[key]
    if task.get("critical-time") is not None:  # argos taskgen's critical block spelled it so
        out["criticaltime"] = task["critical-time"]
    for key, value in task.items():
        if key in out or key in _PLAIN or key in _DROPPED or key == "critical-time":
            continue
        if key != "priority":
            out[key if key.startswith(("x-", "_")) else f"x-{key}"] = value
    return out


class GenodeTasks:
    """A set's tasks as Genode is sent them (``genode_task``), made only when a session asks."""

    def __init__(self, taskset: Iterable[Mapping[str, Any]]) -> None:
        self._taskset = taskset

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (genode_task(t) for t in self._taskset)


def to_farm(taskset: Iterable[Mapping[str, Any]], index: int, name: str) -> FarmTaskSet:
    """A concrete original task set as one farm variant (``index``), linked back by ``compat``."""
    variant = FarmTaskSet(name=name)
    # the ids are the original's (0, 1, ...): no renumbering, and no O(n^2) append checks
    variant._tasks = [concrete_task(farm_task(t)) for t in taskset]
    variant.index = index
    variant.compat = taskset  # type: ignore[attr-defined]
    variant.genode_tasks = GenodeTasks(taskset)  # type: ignore[attr-defined]
    return variant


class CompatSource:
    """What farm's add_job takes: the original sets' variants, converted one by one, lazily."""

    def __init__(self, sets: Iterable[Any], name: str, count: int | None = None) -> None:
        self._sets = sets
        self.name = name
        self._count = count

    def variant_count(self) -> int | None:
        return self._count

    def validate(self) -> None:
        """Nothing up front: each variant is checked by farm's task model as it is drawn."""

    def variants(self) -> Iterator[FarmTaskSet]:
        for index, original in enumerate(self._sets):
            variant = to_farm(original, index, self.name)
            variant.validate()
            yield variant

    def __getstate__(self) -> dict[str, Any]:
        """Not picklable: the journal then records the job as not resumable automatically."""
        raise TypeError("compat submissions are not resumable")


def unique_name(prefix: str, taskset: object) -> str:
    """A submission name of its own: the originals ran every add_job, even of the same set."""
    return f"{prefix}.{type(taskset).__name__}#{next(_ids)}-{id(taskset):x}"


def _arity(hook: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


class CompatMonitor:
    """Wraps a user's monitor of the original shape: hands it the original set, jobs filled.

    Each event is recorded on the original task (``record_event``) before the
    user's ``__taskset_event__`` runs, called with ``(taskset, event)`` or, as
    the MaLSAMi distributor did, ``(taskset)`` when it takes one argument. A
    set starting again (re-queued after a failure) starts with empty job records.
    """

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self._tasks: dict[int, dict[Any, Any]] = {}  # id(original set) -> {task id: task}

    def _hook(self, name: str) -> Callable[..., Any] | None:
        return getattr(self.monitor, name, None) if self.monitor is not None else None

    @staticmethod
    def original(variant: Any) -> Any:
        return getattr(variant, "compat", variant)

    def __taskset_start__(self, variant: Any) -> None:
        taskset = self.original(variant)
        index = self._tasks[id(taskset)] = {}
        for task in taskset:
            task.reset_jobs()
            index[task.get("id")] = task
        hook = self._hook("__taskset_start__")
        if hook is not None:
            hook(taskset)

    def __taskset_event__(self, variant: Any, event: Event) -> None:
        taskset = self.original(variant)
        task = self._tasks.get(id(taskset), {}).get(event.task_id)
        if task is not None:
            task.record_event(event)
        hook = self._hook("__taskset_event__")
        if hook is not None:
            hook(taskset) if _arity(hook) == 1 else hook(taskset, event)

    def __taskset_finish__(self, variant: Any) -> None:
        self._tasks.pop(id(self.original(variant)), None)
        hook = self._hook("__taskset_finish__")
        if hook is not None:
            hook(self.original(variant))

    def __taskset_stop__(self, variant: Any) -> None:
        self._tasks.pop(id(self.original(variant)), None)
        hook = self._hook("__taskset_stop__")
        if hook is not None:
            hook(self.original(variant))

    def __taskset_bad__(self, variant: Any, tries: int) -> None:
        self._tasks.pop(id(self.original(variant)), None)
        hook = self._hook("__taskset_bad__")
        if hook is not None:
            hook(self.original(variant), tries)

    def close(self) -> None:
        hook = self._hook("close")
        if hook is not None:
            hook()


def stamp(event: Event) -> int:
    """An event's time as the originals stored it: integer milliseconds."""
    return round(event.timestamp * 1000)


__all__ = [
    "CompatMonitor",
    "CompatSource",
    "farm_priority",
    "farm_task",
    "genode_task",
    "to_farm",
    "unique_name",
]
