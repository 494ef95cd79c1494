"""``ValueTestingMonitor``: appends ``(tries, {task id: (task, jobs)})`` for each set."""

from __future__ import annotations

from typing import Any

from farm.compat.malsami.monitor import AbstractMonitor

Job = tuple[Any, Any, Any]


def jobs_by_task(taskset: Any) -> dict[str, tuple[Any, list[Job]]]:
    """``{str(task.id): (task, [(start, end, exit type), ...])}`` in ``task['jobs']`` order.

    A job still running when its set was given up has ``None`` for its end and
    exit type (the original failed with an IndexError there).
    """
    out: dict[str, tuple[Any, list[Job]]] = {}
    for task in taskset:
        jobs = []
        for record in (task.get("jobs") or {}).values():
            start, end, kind = [*record, None, None, None][:3]
            jobs.append((start, end, kind))
        out[str(task.id)] = (task, jobs)
    return out


class ValueTestingMonitor(AbstractMonitor):
    """``ValueTestingMonitor(output_list)``: ``tries`` is 0 for a finished set, n for a bad one."""

    def __init__(self, output_list: list[Any]) -> None:
        self.out = output_list

    def __taskset_event__(self, taskset: Any, event: Any = None) -> None:
        pass

    def __taskset_start__(self, taskset: Any) -> None:
        pass

    def __taskset_finish__(self, taskset: Any) -> None:
        self.out.append((0, jobs_by_task(taskset)))

    def __taskset_stop__(self, taskset: Any) -> None:
        for task in taskset:
            task["jobs"] = {}

    def __taskset_bad__(self, taskset: Any, n: int) -> None:
        self.out.append((n, jobs_by_task(taskset)))
