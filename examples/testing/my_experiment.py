"""A user's own experiment: a task set with variants and a monitor that counts job exits.

This is the code under test in test_my_experiment.py (see docs/testing.md).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from farm.monitors import AbstractMonitor, taskset_variant
from farm.taskset import Task, TaskSet


class PeriodSweep(TaskSet):
    """One `hey` task at three periods (100, 200, 300 ms), two jobs each: 3 variants."""

    def __init__(self) -> None:
        super().__init__()
        self.append(
            Task({"pkg": "hey", "priority": 10, "period": [100, 200, 300], "numberofjobs": 2})
        )


class ExitCounter(AbstractMonitor):
    """Counts job exits by type per variant; ``finished`` lists the variants that finished."""

    def __init__(self) -> None:
        self.exits: dict[int | None, Counter[str]] = {}
        self.finished: list[int | None] = []
        self._lock = threading.Lock()

    def __taskset_start__(self, taskset: Any) -> None:
        with self._lock:  # a re-run (after a crash) starts counting afresh
            self.exits[taskset_variant(taskset)] = Counter()

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        if event.job is not None and str(event.type).startswith("EXIT"):
            with self._lock:
                self.exits.setdefault(taskset_variant(taskset), Counter())[str(event.type)] += 1

    def __taskset_finish__(self, taskset: Any) -> None:
        with self._lock:
            self.finished.append(taskset_variant(taskset))
