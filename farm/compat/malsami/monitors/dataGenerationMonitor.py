"""``DataGenerationMonitor``: appends every finished or given-up set to the caller's list."""

from __future__ import annotations

from typing import Any

from farm.compat.malsami.monitor import AbstractMonitor


class DataGenerationMonitor(AbstractMonitor):
    """``DataGenerationMonitor(output_list)``: sets (with ``task['jobs']``) land in the list."""

    def __init__(self, output_list: list[Any]) -> None:
        self.out = output_list

    def __taskset_event__(self, taskset: Any, event: Any = None) -> None:
        pass

    def __taskset_start__(self, taskset: Any) -> None:
        pass

    def __taskset_finish__(self, taskset: Any) -> None:
        self.out.append(taskset)

    def __taskset_stop__(self, taskset: Any) -> None:
        for task in taskset:
            task["jobs"] = {}

    def __taskset_bad__(self, taskset: Any, n: int) -> None:
        """Given up after ``n`` tries: appended all the same (with the jobs it has)."""
        self.out.append(taskset)
