"""``StdOutMonitor``: prints each finished set's tasks and their job records."""

from __future__ import annotations

from typing import Any

from farm.compat.malsami.monitor import AbstractMonitor


class StdOutMonitor(AbstractMonitor):
    def __taskset_finish__(self, taskset: Any) -> None:
        for task in taskset:
            print(f"task: {task.id}")
            for number, record in sorted(task["jobs"].items(), key=lambda kv: int(kv[0])):
                print(number, *record)
