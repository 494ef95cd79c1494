"""SqlStoreMonitor: farm's results store, written once for every SQL database it runs on.

The tables, the run numbering and the exactly-once rules (farm.monitors.sqlite
documents them) live here; a subclass (SqliteMonitor, PostgresMonitor) gives
only what its database does its own way: the connection, the transaction and
its error handling, the DDL types (SCHEMA_TYPES), the placeholder style, how a
new row's id comes back, row locking and how a task's values are stored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Generic, TypeVar

from farm.core.records import SetState
from farm.events import Event, EventType
from farm.monitors.base import (
    AbstractMonitor,
    taskset_job,
    taskset_label,
    taskset_replaces_finish,
    taskset_tasks,
    taskset_variant,
)

log = logging.getLogger(__name__)

SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS tasksets (
    id          {pk},
    job         TEXT    NOT NULL,
    variant     INTEGER,
    description TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('started', 'finished', 'stopped', 'bad')),
    tries       INTEGER NOT NULL DEFAULT 0,
    started_at  {real},
    finished_at {real},
    UNIQUE (job, variant)
);
CREATE TABLE IF NOT EXISTS runs (
    id          {pk},
    taskset_id  {ref:<7} NOT NULL REFERENCES tasksets(id),
    attempt     INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('running', 'finished', 'stopped')),
    started_at  {real:<7} NOT NULL,
    ended_at    {real},
    UNIQUE (taskset_id, attempt)
);
CREATE TABLE IF NOT EXISTS tasks (
    taskset_id    {ref} NOT NULL REFERENCES tasksets(id),
    task_id       INTEGER NOT NULL,
    pkg           TEXT,
    priority      {ref},
    period        {number},
    executiontime {number},
    criticaltime  {number},
    deadline      {number},
    "offset"      {number},
    numberofjobs  {ref},
    quota         {number},
    config        TEXT,
    PRIMARY KEY (taskset_id, task_id)
);
CREATE TABLE IF NOT EXISTS jobs (
    run_id     {ref:<7} NOT NULL REFERENCES runs(id),
    taskset_id {ref:<7} NOT NULL REFERENCES tasksets(id),
    task_id    INTEGER NOT NULL,
    job        INTEGER NOT NULL,
    start_ts   {real},
    end_ts     {real},
    exit_type  TEXT,
    detail     TEXT,
    PRIMARY KEY (run_id, task_id, job)
);
CREATE TABLE IF NOT EXISTS events (
    id          {pk},
    run_id      {ref:<7} NOT NULL REFERENCES runs(id),
    taskset_id  {ref:<7} NOT NULL REFERENCES tasksets(id),
    task_id     INTEGER NOT NULL,
    job         INTEGER,
    type        TEXT    NOT NULL,
    ts          {real:<7} NOT NULL,
    detail      TEXT,
    received_at {real:<7} NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, id);
CREATE INDEX IF NOT EXISTS runs_by_taskset ON runs (taskset_id, state);
CREATE {view} results AS
    SELECT t.job AS job_name, t.variant, j.*
    FROM jobs j JOIN runs r ON r.id = j.run_id JOIN tasksets t ON t.id = j.taskset_id
    WHERE r.state = 'finished';
"""
"""The results tables; a database's types fill in pk, ref, real, number and view."""

FINISHED_NOT_ONCE = """
SELECT t.id, t.job, t.variant, COUNT(r.id) AS finished_runs
FROM tasksets t LEFT JOIN runs r ON r.taskset_id = t.id AND r.state = 'finished'
GROUP BY t.id HAVING COUNT(r.id) != 1
"""
"""Task sets not finished exactly once (no rows = every variant finished once)."""

TASK_COLUMNS = (
    "pkg",
    "priority",
    "period",
    "executiontime",
    "criticaltime",
    "deadline",
    "offset",
    "numberofjobs",
    "quota",
)
"""The ``tasks`` columns taken from a task's dict (after taskset_id and task_id)."""

_TERMINAL = (EventType.JOBS_DONE, EventType.NOTICE)

ConnT = TypeVar("ConnT")


def description_json(taskset: Any) -> str:
    """The set's description as JSON (an error object if it has none)."""
    try:
        return json.dumps(taskset.description(), sort_keys=True, default=str)
    except Exception as exc:
        return json.dumps({"error": f"no description: {exc}"})


class SqlStoreMonitor(AbstractMonitor, Generic[ConnT]):
    """Stores task sets, attempts, tasks, jobs and events in an SQL database (base class)."""

    #: the DDL types filled into SCHEMA_TEMPLATE
    SCHEMA_TYPES: ClassVar[dict[str, str]] = {}
    #: the driver's parameter placeholder; the SQL here is written with "?"
    PARAM: ClassVar[str] = "?"
    #: the larger of two values (SQLite's two-argument MAX, PostgreSQL's GREATEST)
    GREATEST: ClassVar[str] = "MAX"
    #: how a task row is inserted so that a second insert of it is ignored
    INSERT_TASK: ClassVar[tuple[str, str]] = ("INSERT INTO", "")

    def __init__(self) -> None:
        """No connection yet: it opens on the first hook call."""
        self._conn: ConnT | None = None
        self._lock = threading.RLock()
        self._rows: dict[Any, int] = {}  # (job, variant) or id(taskset) -> tasksets.id
        self._anon: dict[int, Any] = {}  # id(taskset) -> taskset (keeps the id valid)
        self._runs: dict[int, int] = {}  # tasksets.id -> running runs.id

    @classmethod
    def schema(cls) -> str:
        """The CREATE statements in this database's types."""
        return SCHEMA_TEMPLATE.format(**cls.SCHEMA_TYPES)

    # -- what a database does its own way ---------------------------------------------

    def _open(self) -> ConnT:
        """A new connection with the schema created."""
        raise NotImplementedError

    def _usable(self, conn: ConnT) -> bool:
        """Whether the cached connection can still be used."""
        return True

    def _transaction(self, action: str, taskset: Any) -> AbstractContextManager[ConnT]:
        """One transaction (under the monitor's lock) for ``action`` of ``taskset``."""
        raise NotImplementedError

    def _insert_id(self, conn: ConnT, sql: str, args: tuple[Any, ...]) -> int:
        """Run an INSERT of one row and return the row's id."""
        raise NotImplementedError

    def _insert_taskset(
        self, conn: ConnT, job: str, variant: int | None, taskset: Any
    ) -> tuple[int, bool]:
        """The set's tasksets.id and whether this call inserted the row."""
        raise NotImplementedError

    def _task_values(self, task: dict[str, Any]) -> tuple[Any, ...]:
        """The TASK_COLUMNS values of ``task`` as this database stores them."""
        raise NotImplementedError

    def _lock_taskset(self, conn: ConnT, taskset_id: int) -> None:
        """Serialise writers of one set's runs (nothing to do with one writer)."""

    # -- connection ------------------------------------------------------------------

    @property
    def connection(self) -> ConnT:
        """The monitor's connection (opened, with the schema, on first use)."""
        with self._lock:
            if self._conn is None or not self._usable(self._conn):
                self._conn = self._open()
            return self._conn

    def close(self) -> None:
        """Close the connection (a later hook call reopens it)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()  # type: ignore[attr-defined]
            self._conn = None
            self._runs.clear()

    def _sql(self, sql: str) -> str:
        return sql if self.PARAM == "?" else sql.replace("?", self.PARAM)

    def _run(self, conn: ConnT, sql: str, args: tuple[Any, ...]) -> Any:
        """``sql`` (written with "?") executed with ``args``; the driver's cursor."""
        return conn.execute(self._sql(sql), args)  # type: ignore[attr-defined]

    # -- identity --------------------------------------------------------------------

    def _key(self, taskset: Any) -> Any:
        variant = taskset_variant(taskset)
        return (taskset_job(taskset), variant) if variant is not None else id(taskset)

    def _select_taskset(self, conn: ConnT, job: str, variant: int | None) -> int | None:
        row = self._run(
            conn, "SELECT id FROM tasksets WHERE job = ? AND variant = ?", (job, variant)
        ).fetchone()
        return None if row is None else int(row[0])

    def _taskset_row(self, conn: ConnT, taskset: Any) -> int:
        key = self._key(taskset)
        if key in self._rows:
            return self._rows[key]
        job, variant = taskset_job(taskset), taskset_variant(taskset)
        row_id, inserted = self._insert_taskset(conn, job, variant, taskset)
        if inserted:
            insert, conflict = self.INSERT_TASK
            for task in taskset_tasks(taskset):
                self._run(
                    conn,
                    f"{insert} tasks (taskset_id, task_id, pkg, priority, period, executiontime, "
                    'criticaltime, deadline, "offset", numberofjobs, quota, config) '
                    f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){conflict}",
                    (
                        row_id,
                        task.get("id"),
                        *self._task_values(task),
                        json.dumps(task.get("config", {}), sort_keys=True, default=str),
                    ),
                )
        self._rows[key] = row_id
        if variant is None:
            self._anon[id(taskset)] = taskset
        return row_id

    def _forget(self, taskset: Any) -> None:
        """Drop a settled set's cached row id: a long-lived monitor must not grow per set."""
        self._rows.pop(self._key(taskset), None)
        if taskset_variant(taskset) is None:
            self._anon.pop(id(taskset), None)

    def _start_run(self, conn: ConnT, taskset_id: int, now: float) -> int:
        self._runs.pop(taskset_id, None)
        self._lock_taskset(conn, taskset_id)
        self._run(  # a start without stop/finish, here or in a farm that died
            conn,
            "UPDATE runs SET state = 'stopped', ended_at = ? "
            "WHERE taskset_id = ? AND state = 'running'",
            (now, taskset_id),
        )
        (attempt,) = self._run(
            conn,
            "SELECT COALESCE(MAX(attempt), 0) + 1 FROM runs WHERE taskset_id = ?",
            (taskset_id,),
        ).fetchone()
        run_id = self._insert_id(
            conn,
            "INSERT INTO runs (taskset_id, attempt, state, started_at) VALUES (?, ?, 'running', ?)",
            (taskset_id, attempt, now),
        )
        self._run(
            conn,
            "UPDATE tasksets SET state = 'started', tries = ?, finished_at = NULL, "
            "started_at = COALESCE(started_at, ?) WHERE id = ?",
            (attempt, now, taskset_id),
        )
        self._runs[taskset_id] = run_id
        return run_id

    # -- hooks -----------------------------------------------------------------------

    def __taskset_start__(self, taskset: Any) -> None:
        with self._transaction("start", taskset) as conn:
            self._start_run(conn, self._taskset_row(conn, taskset), time.time())

    def __taskset_event__(self, taskset: Any, event: Event) -> None:
        with self._transaction("event", taskset) as conn:
            self._event(conn, taskset, event)

    def _event(self, conn: ConnT, taskset: Any, event: Event) -> None:
        now = time.time()
        taskset_id = self._taskset_row(conn, taskset)
        run_id = self._runs.get(taskset_id)
        if run_id is None:
            log.warning("event for %s before its start: starting a run", taskset_job(taskset))
            run_id = self._start_run(conn, taskset_id, now)
        self._run(
            conn,
            "INSERT INTO events (run_id, taskset_id, task_id, job, type, ts, detail, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, taskset_id, event.task_id, event.job, str(event.type),
             event.timestamp, event.detail, now),
        )  # fmt: skip
        if event.job is None or event.type in _TERMINAL:
            return
        if event.type is EventType.START:
            self._run(
                conn,
                "INSERT INTO jobs (run_id, taskset_id, task_id, job, start_ts) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, task_id, job) "
                "DO UPDATE SET start_ts = excluded.start_ts",
                (run_id, taskset_id, event.task_id, event.job, event.timestamp),
            )
        else:
            self._run(
                conn,
                "INSERT INTO jobs (run_id, taskset_id, task_id, job, end_ts, exit_type, "
                "detail) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, task_id, job) "
                "DO UPDATE SET end_ts = excluded.end_ts, exit_type = excluded.exit_type, "
                "detail = excluded.detail",
                (run_id, taskset_id, event.task_id, event.job, event.timestamp,
                 str(event.type), event.detail),
            )  # fmt: skip

    def _replace_finish(self, conn: ConnT, taskset: Any, taskset_id: int) -> None:
        """Delete the latest finished run of the set but the current one (resumed re-run)."""
        row = self._run(
            conn,
            "SELECT id, attempt FROM runs WHERE taskset_id = ? AND state = 'finished' "
            "AND id != ? ORDER BY attempt DESC LIMIT 1",
            (taskset_id, self._runs.get(taskset_id, -1)),
        ).fetchone()
        if row is None:
            return
        run_id, attempt = row
        self._run(conn, "DELETE FROM events WHERE run_id = ?", (run_id,))
        self._run(conn, "DELETE FROM jobs WHERE run_id = ?", (run_id,))
        self._run(conn, "DELETE FROM runs WHERE id = ?", (run_id,))
        log.info(
            "%s: finish of attempt %d (recorded before the farm stopped) replaced by this run",
            taskset_label(taskset),
            attempt,
        )

    def _settle(
        self, taskset: Any, run_state: str, state: SetState, tries: int | None = None
    ) -> None:
        with self._transaction(str(state), taskset) as conn:
            now = time.time()
            taskset_id = self._taskset_row(conn, taskset)
            self._lock_taskset(conn, taskset_id)
            if state is SetState.FINISHED and taskset_replaces_finish(taskset):
                self._replace_finish(conn, taskset, taskset_id)
            run_id = self._runs.pop(taskset_id, None)
            if run_id is not None:
                self._run(
                    conn,
                    "UPDATE runs SET state = ?, ended_at = ? WHERE id = ?",
                    (run_state, now, run_id),
                )
            self._run(
                conn,
                "UPDATE tasksets SET state = ?, finished_at = ?, "
                f"tries = {self.GREATEST}(tries, ?) WHERE id = ?",
                (str(state), now if state is SetState.FINISHED else None, tries or 0, taskset_id),
            )
        if state in (SetState.FINISHED, SetState.BAD):
            self._forget(taskset)

    def __taskset_finish__(self, taskset: Any) -> None:
        self._settle(taskset, "finished", SetState.FINISHED)

    def __taskset_stop__(self, taskset: Any) -> None:
        self._settle(taskset, "stopped", SetState.STOPPED)

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        self._settle(taskset, "stopped", SetState.BAD, tries)
