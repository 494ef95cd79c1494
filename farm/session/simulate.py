"""Simulated job timelines for pretend targets (dry-run sessions, the fake dom0).

Each task runs alone (no interference between tasks): job ``k`` is released at
``offset + k * period`` ms, starts at its release or when the previous job
ended, runs ``executiontime`` ms and exits with ``EXIT`` if it ended within
``criticaltime`` (or ``deadline``) of its release, else ``EXIT_CRITICAL``.
After the last job the task sends ``JOBS_DONE``. ``numberofjobs: 0`` means
unbounded: the stream never ends for that task (it is lazy, so that is fine).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from farm.events import Event, EventType

#: Execution time used for a task that gives none (ms).
DEFAULT_EXECUTION_MS = 1.0


def _number(task: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = task.get(key)
    if value is None or isinstance(value, bool):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def task_timeline(task: Mapping[str, Any]) -> Iterator[tuple[float, Event]]:
    """Yield ``(time_ms, event)`` for one task in time order (lazy, maybe infinite)."""
    task_id = int(task["id"])
    offset = _number(task, "offset")
    period = _number(task, "period")
    execution = _number(task, "executiontime", DEFAULT_EXECUTION_MS) or DEFAULT_EXECUTION_MS
    critical = _number(task, "criticaltime") or _number(task, "deadline")
    jobs = int(_number(task, "numberofjobs", 1))
    counter: Iterable[int] = itertools.count() if jobs <= 0 else range(jobs)
    previous_end = 0.0
    for job in counter:
        release = offset + job * period
        start = max(release, previous_end)
        end = start + execution
        late = critical > 0 and end - release > critical
        exit_type = EventType.EXIT_CRITICAL if late else EventType.EXIT
        yield start, Event(task_id, job, EventType.START, start / 1000.0)
        yield end, Event(task_id, job, exit_type, end / 1000.0)
        previous_end = end
    yield previous_end, Event(task_id, None, EventType.JOBS_DONE, previous_end / 1000.0)


def simulate(tasks: Iterable[Mapping[str, Any]]) -> Iterator[tuple[float, Event]]:
    """Merge the timelines of all tasks into one time-ordered stream of ``(ms, event)``."""
    streams = [task_timeline(task) for task in tasks]
    # Tie-break on the task's position so that the merge is deterministic.
    keyed = [((t, i, n, ev) for n, (t, ev) in enumerate(s)) for i, s in enumerate(streams)]
    for t, _i, _n, ev in heapq.merge(*keyed, key=lambda item: (item[0], item[1], item[2])):
        yield t, ev
