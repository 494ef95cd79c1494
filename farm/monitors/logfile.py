"""LoggingMonitor: one readable line per hook call in a log file (seed 004's monitor)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from farm.events import Event
from farm.monitors.base import (
    AbstractMonitor,
    taskset_label,
    taskset_replaces_finish,
    taskset_tasks,
)


class LoggingMonitor(AbstractMonitor):
    """Writes one line per task-set start, event, finish, stop and give-up to a log file."""

    def __init__(self, path: str | Path = "log/monitor.log", level: int = logging.INFO) -> None:
        """The file (and its directory) is created on the first hook call."""
        self.path = Path(path)
        self.level = level
        self._logger: logging.Logger | None = None
        self._handler: logging.FileHandler | None = None
        self._lock = threading.Lock()

    @property
    def logger(self) -> logging.Logger:
        """This monitor's own logger (not registered globally, does not propagate)."""
        with self._lock:
            if self._logger is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                handler = logging.FileHandler(self.path, encoding="utf-8")
                handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
                logger = logging.Logger(f"farm.monitor[{self.path}]", self.level)
                logger.propagate = False
                logger.addHandler(handler)
                self._logger, self._handler = logger, handler
            return self._logger

    def _line(self, text: str) -> None:
        self.logger.log(self.level, text)

    def __taskset_start__(self, taskset: Any) -> None:
        ids = ",".join(str(t.get("id")) for t in taskset_tasks(taskset))
        note = " (re-run: its FINISH before the farm stopped may be above)"
        note = note if taskset_replaces_finish(taskset) else ""
        self._line(f"START   {taskset_label(taskset)} tasks=[{ids}]{note}")

    def __taskset_event__(self, taskset: Any, event: Event) -> None:
        job = "-" if event.job is None else event.job
        detail = f" ({event.detail})" if event.detail else ""
        self._line(
            f"EVENT   {taskset_label(taskset)} task={event.task_id} job={job} "
            f"{event.type} t={event.timestamp:.6f}s{detail}"
        )

    def __taskset_finish__(self, taskset: Any) -> None:
        note = (
            " (replaces an earlier FINISH of this set)" if taskset_replaces_finish(taskset) else ""
        )
        self._line(f"FINISH  {taskset_label(taskset)}{note}")

    def __taskset_stop__(self, taskset: Any) -> None:
        self._line(f"STOP    {taskset_label(taskset)} (not finished, re-queued)")

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        self._line(f"BAD     {taskset_label(taskset)} given up after {tries} tries")

    def close(self) -> None:
        """Close the log file (a later hook call reopens it)."""
        with self._lock:
            if self._handler is not None and self._logger is not None:
                self._logger.removeHandler(self._handler)
                self._handler.close()
            self._logger = self._handler = None
