"""CsvMonitor: every event as a CSV row (the seeds' CsvHandler), flushed per row."""

from __future__ import annotations

import csv
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from farm.events import Event
from farm.monitors.base import (
    AbstractMonitor,
    taskset_job,
    taskset_replaces_finish,
    taskset_variant,
)

COLUMNS = ("wall_time", "taskset", "variant", "task_id", "job", "type", "timestamp", "detail")
"""Header row. ``timestamp`` is the guest's (s); ``wall_time`` the host's, ISO 8601 UTC."""

REPLACES_FINISH = "replaces an earlier FINISHED of this set"
"""``detail`` of a FINISHED row whose set ran again after the farm was resumed (rows are
never rewritten: keep the last FINISHED of a set and the events just before it)."""


class CsvMonitor(AbstractMonitor):
    """One row per event, plus FINISHED / STOPPED / BAD rows per task set.

    A set run again after a resume (its earlier FINISHED may be in the file) gets a
    FINISHED row whose detail is REPLACES_FINISH.
    """

    def __init__(self, path: str | Path = "events.csv") -> None:
        """Rows are appended; the header is written when the file is new or empty."""
        self.path = Path(path)
        self._file: IO[str] | None = None
        self._writer: Any = None
        self._lock = threading.Lock()

    def _row(self, taskset: Any, kind: str, event: Event | None = None, detail: str = "") -> None:
        wall = datetime.now(UTC).isoformat(timespec="milliseconds")
        variant = taskset_variant(taskset)
        row = [
            wall,
            taskset_job(taskset),
            "" if variant is None else variant,
            "" if event is None else event.task_id,
            "" if event is None or event.job is None else event.job,
            kind,
            "" if event is None else repr(event.timestamp),
            (event.detail or "") if event is not None else detail,
        ]
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", newline="", encoding="utf-8")
                self._writer = csv.writer(self._file)
                if self._file.tell() == 0:
                    self._writer.writerow(COLUMNS)
            self._writer.writerow(row)
            self._file.flush()

    def __taskset_event__(self, taskset: Any, event: Event) -> None:
        self._row(taskset, str(event.type), event)

    def __taskset_finish__(self, taskset: Any) -> None:
        detail = REPLACES_FINISH if taskset_replaces_finish(taskset) else ""
        self._row(taskset, "FINISHED", detail=detail)

    def __taskset_stop__(self, taskset: Any) -> None:
        self._row(taskset, "STOPPED")

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        self._row(taskset, "BAD", detail=f"tries={tries}")

    def close(self) -> None:
        """Close the file (a later row reopens it in append mode)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file = self._writer = None
