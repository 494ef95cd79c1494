"""Job records: what events say about each job of a task set's tasks (start, end, outcome)."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from farm.errors import TaskSetError
from farm.events import Event, EventType

if TYPE_CHECKING:
    from farm.taskset.task import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job of a task: start (guest s), end and how it ended (None while running)."""

    job: int
    start: float | None
    end: float | None = None
    exit_type: EventType | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        d = asdict(self)
        d["exit_type"] = None if self.exit_type is None else str(self.exit_type)
        return d


class JobLog:
    """Mixin of TaskSet: job records kept from events, thread-safe, picklable (lock dropped).

    The host class provides ``name`` and ``_tasks`` (task dicts with an ``id``)
    and calls ``_init_records()`` when it is built.
    """

    name: str
    _tasks: list[Task]

    def _init_records(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[int, dict[int, JobRecord]] = {}
        self._done: set[int] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _has_task(self, task_id: object) -> bool:
        return any(t.get("id") == task_id for t in self._tasks)

    def record(self, event: Event) -> JobRecord | None:
        """Keep what ``event`` says about a job; returns the updated record, if any."""
        if not self._has_task(event.task_id):
            if event.type is EventType.NOTICE:  # an agent's set-wide remark (task -1)
                log.info("%r: agent notice: %s", self, event.detail)
                return None
            log.warning(
                "%r: event for unknown task %s ignored: %s", self, event.task_id, event.type
            )
            return None
        with self._lock:
            if event.type is EventType.JOBS_DONE:
                self._done.add(event.task_id)
                return None
            if event.type is not EventType.START and not event.is_exit:
                return None
            if event.job is None:
                log.warning(
                    "%r: %s of task %s without a job number", self, event.type, event.task_id
                )
                return None
            jobs = self._records.setdefault(event.task_id, {})
            old = jobs.get(event.job)
            if event.type is EventType.START:
                rec = JobRecord(event.job, event.timestamp, detail=event.detail)
            elif old is None:
                rec = JobRecord(event.job, None, event.timestamp, event.type, event.detail)
            else:
                detail = event.detail if event.detail is not None else old.detail
                rec = replace(old, end=event.timestamp, exit_type=event.type, detail=detail)
            jobs[event.job] = rec
            return rec

    def jobs(self, task_id: int) -> list[JobRecord]:
        """Records of a task's jobs, by job number."""
        if not self._has_task(task_id):
            raise TaskSetError(f"task set {self.name} has no task {task_id}")
        with self._lock:
            return sorted(self._records.get(task_id, {}).values(), key=lambda r: r.job)

    @property
    def all_done(self) -> bool:
        """True once every task sent JOBS_DONE (False for an empty set)."""
        with self._lock:
            return bool(self._tasks) and all(t.get("id") in self._done for t in self._tasks)

    def reset_jobs(self) -> None:
        """Forget all job records (a set re-queued after a machine failure starts clean)."""
        with self._lock:
            self._records.clear()
            self._done.clear()
