"""``LoggingMonitor``: logs each finished set's tasks (with ``jobs``) and each given-up set."""

from __future__ import annotations

import logging
from typing import Any

from farm.compat.malsami.monitor import AbstractMonitor


class LoggingMonitor(AbstractMonitor):
    """Logs to the ``OutputMonitorLogger`` logger (the application decides where it goes)."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("OutputMonitorLogger")

    def __taskset_event__(self, taskset: Any, event: Any = None) -> None:
        pass

    def __taskset_finish__(self, taskset: Any) -> None:
        for task in taskset:
            self.logger.info("task: %s", task.id)
            self.logger.info("%s", task)

    def __taskset_stop__(self, taskset: Any) -> None:
        for task in taskset:
            task["jobs"] = {}

    def __taskset_bad__(self, taskset: Any, n: int) -> None:
        self.logger.info(
            "BAD: after %d tries, this task set could not be processed:\n%s", n, taskset
        )
