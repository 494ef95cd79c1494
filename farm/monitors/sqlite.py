"""SqliteMonitor: farm's embedded results store (one SQLite file, WAL mode).

Schema (created if missing; times: ``*_at`` host unix time, ``*_ts``/``ts``
guest seconds)::

    tasksets  one row per concrete variant, keyed by (job, variant)
      id INTEGER PRIMARY KEY, job TEXT, variant INTEGER (index in its job; NULL
      if the task set has none), description TEXT (JSON), state TEXT
      ('started' | 'finished' | 'stopped' | 'bad'), tries INTEGER (attempts so
      far), started_at REAL (first attempt), finished_at REAL;
      UNIQUE (job, variant)
    runs      one row per attempt of a variant
      id INTEGER PRIMARY KEY, taskset_id -> tasksets.id, attempt INTEGER (1..),
      state TEXT ('running' | 'finished' | 'stopped'), started_at REAL,
      ended_at REAL; UNIQUE (taskset_id, attempt)
    tasks     the variant's tasks as described
      taskset_id, task_id, pkg, priority, period, executiontime, criticaltime,
      deadline, "offset", numberofjobs, quota, config (JSON);
      PRIMARY KEY (taskset_id, task_id)
    jobs      one row per job of a run
      run_id -> runs.id, taskset_id, task_id, job, start_ts, end_ts,
      exit_type (EXIT, EXIT_CRITICAL, ...), detail; PRIMARY KEY (run_id, task_id, job)
    events    every event as received
      id, run_id, taskset_id, task_id, job, type, ts, detail, received_at
    results   VIEW: jobs of finished runs, with the variant's job and variant

A variant that is stopped and run again keeps its ``tasksets`` row and gets a
new ``runs`` row (attempt + 1); jobs and events of every attempt are kept,
tied to their run, and the ``results`` view shows only the finished one. So
"every variant finished exactly once" is one query (FINISHED_NOT_ONCE below)
that must return no rows.

A farm that died between recording a finish here and settling it in its
journal runs the set again when resumed, flagged ``replaces_finish``: that
run's finish replaces the earlier finished run (its row, jobs and events are
deleted in the same transaction), so the set is still recorded once. Without
the flag a second finish stays visible to FINISHED_NOT_ONCE. A run left
'running' by a dead farm is marked 'stopped' when the set starts again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

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

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasksets (
    id          INTEGER PRIMARY KEY,
    job         TEXT    NOT NULL,
    variant     INTEGER,
    description TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('started', 'finished', 'stopped', 'bad')),
    tries       INTEGER NOT NULL DEFAULT 0,
    started_at  REAL,
    finished_at REAL,
    UNIQUE (job, variant)
);
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,
    taskset_id  INTEGER NOT NULL REFERENCES tasksets(id),
    attempt     INTEGER NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('running', 'finished', 'stopped')),
    started_at  REAL    NOT NULL,
    ended_at    REAL,
    UNIQUE (taskset_id, attempt)
);
CREATE TABLE IF NOT EXISTS tasks (
    taskset_id    INTEGER NOT NULL REFERENCES tasksets(id),
    task_id       INTEGER NOT NULL,
    pkg           TEXT,
    priority      INTEGER,
    period        NUMERIC,
    executiontime NUMERIC,
    criticaltime  NUMERIC,
    deadline      NUMERIC,
    "offset"      NUMERIC,
    numberofjobs  INTEGER,
    quota         NUMERIC,
    config        TEXT,
    PRIMARY KEY (taskset_id, task_id)
);
CREATE TABLE IF NOT EXISTS jobs (
    run_id     INTEGER NOT NULL REFERENCES runs(id),
    taskset_id INTEGER NOT NULL REFERENCES tasksets(id),
    task_id    INTEGER NOT NULL,
    job        INTEGER NOT NULL,
    start_ts   REAL,
    end_ts     REAL,
    exit_type  TEXT,
    detail     TEXT,
    PRIMARY KEY (run_id, task_id, job)
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    taskset_id  INTEGER NOT NULL REFERENCES tasksets(id),
    task_id     INTEGER NOT NULL,
    job         INTEGER,
    type        TEXT    NOT NULL,
    ts          REAL    NOT NULL,
    detail      TEXT,
    received_at REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, id);
CREATE INDEX IF NOT EXISTS runs_by_taskset ON runs (taskset_id, state);
CREATE VIEW IF NOT EXISTS results AS
    SELECT t.job AS job_name, t.variant, j.*
    FROM jobs j JOIN runs r ON r.id = j.run_id JOIN tasksets t ON t.id = j.taskset_id
    WHERE r.state = 'finished';
"""

FINISHED_NOT_ONCE = """
SELECT t.id, t.job, t.variant, COUNT(r.id) AS finished_runs
FROM tasksets t LEFT JOIN runs r ON r.taskset_id = t.id AND r.state = 'finished'
GROUP BY t.id HAVING COUNT(r.id) != 1
"""
"""Task sets not finished exactly once (no rows = every variant finished once)."""

_TASK_COLUMNS = (
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
_TERMINAL = (EventType.JOBS_DONE, EventType.NOTICE)
#: SQLite page cache of the monitor's connection, KiB
CACHE_KIB = 512


def _sql_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float | str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


class SqliteMonitor(AbstractMonitor):
    """Stores task sets, attempts, tasks, jobs and events in an SQLite file (WAL)."""

    def __init__(self, path: str | Path = "results.db") -> None:
        """The database is opened (and its schema created) on the first hook call."""
        self.path = Path(path) if str(path) != ":memory:" else path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._rows: dict[Any, int] = {}  # (job, variant) or id(taskset) -> tasksets.id
        self._anon: dict[int, Any] = {}  # id(taskset) -> taskset (keeps the id valid)
        self._runs: dict[int, int] = {}  # tasksets.id -> running runs.id

    # -- connection ------------------------------------------------------------------

    @property
    def connection(self) -> sqlite3.Connection:
        """The monitor's connection (opened on first use; usable from any one thread at a time)."""
        with self._lock:
            if self._conn is None:
                if isinstance(self.path, Path):
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                # writes go to the tail of the indexes: a small page cache serves them, and a
                # long-running farm's RSS stays flat (the default 2 MiB fills up over hours)
                conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.executescript(SCHEMA)
                self._conn = conn
            return self._conn

    def close(self) -> None:
        """Close the database (a later hook call reopens it)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._runs.clear()

    # -- identity --------------------------------------------------------------------

    def _key(self, taskset: Any) -> Any:
        variant = taskset_variant(taskset)
        return (taskset_job(taskset), variant) if variant is not None else id(taskset)

    def _taskset_row(self, conn: sqlite3.Connection, taskset: Any) -> int:
        key = self._key(taskset)
        if key in self._rows:
            return self._rows[key]
        job, variant = taskset_job(taskset), taskset_variant(taskset)
        row = None
        if variant is not None:
            row = conn.execute(
                "SELECT id FROM tasksets WHERE job = ? AND variant = ?", (job, variant)
            ).fetchone()
        if row is not None:
            row_id = int(row[0])
        else:
            try:
                description = json.dumps(taskset.description(), sort_keys=True, default=str)
            except Exception as exc:
                description = json.dumps({"error": f"no description: {exc}"})
            cur = conn.execute(
                "INSERT INTO tasksets (job, variant, description, state) "
                "VALUES (?, ?, ?, 'started')",
                (job, variant, description),
            )
            row_id = int(cur.lastrowid or 0)
            for task in taskset_tasks(taskset):
                conn.execute(
                    "INSERT OR IGNORE INTO tasks (taskset_id, task_id, pkg, priority, period, "
                    'executiontime, criticaltime, deadline, "offset", numberofjobs, quota, config) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row_id,
                        task.get("id"),
                        *(_sql_value(task.get(c)) for c in _TASK_COLUMNS),
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

    def _start_run(self, conn: sqlite3.Connection, taskset_id: int, now: float) -> int:
        self._runs.pop(taskset_id, None)
        conn.execute(  # a start without stop/finish, here or in a farm that died
            "UPDATE runs SET state = 'stopped', ended_at = ? "
            "WHERE taskset_id = ? AND state = 'running'",
            (now, taskset_id),
        )
        (attempt,) = conn.execute(
            "SELECT COALESCE(MAX(attempt), 0) + 1 FROM runs WHERE taskset_id = ?", (taskset_id,)
        ).fetchone()
        cur = conn.execute(
            "INSERT INTO runs (taskset_id, attempt, state, started_at) VALUES (?, ?, 'running', ?)",
            (taskset_id, attempt, now),
        )
        conn.execute(
            "UPDATE tasksets SET state = 'started', tries = ?, finished_at = NULL, "
            "started_at = COALESCE(started_at, ?) WHERE id = ?",
            (attempt, now, taskset_id),
        )
        run_id = int(cur.lastrowid or 0)
        self._runs[taskset_id] = run_id
        return run_id

    def _end_run(self, conn: sqlite3.Connection, taskset_id: int, state: str, now: float) -> None:
        run_id = self._runs.pop(taskset_id, None)
        if run_id is not None:
            conn.execute(
                "UPDATE runs SET state = ?, ended_at = ? WHERE id = ?", (state, now, run_id)
            )

    # -- hooks -----------------------------------------------------------------------

    def __taskset_start__(self, taskset: Any) -> None:
        with self._lock, self.connection as conn:
            self._start_run(conn, self._taskset_row(conn, taskset), time.time())

    def __taskset_event__(self, taskset: Any, event: Event) -> None:
        now = time.time()
        with self._lock, self.connection as conn:
            taskset_id = self._taskset_row(conn, taskset)
            run_id = self._runs.get(taskset_id)
            if run_id is None:
                log.warning("event for %s before its start: starting a run", taskset_job(taskset))
                run_id = self._start_run(conn, taskset_id, now)
            conn.execute(
                "INSERT INTO events (run_id, taskset_id, task_id, job, type, ts, detail, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, taskset_id, event.task_id, event.job, str(event.type),
                 event.timestamp, event.detail, now),
            )  # fmt: skip
            if event.job is None or event.type in _TERMINAL:
                return
            if event.type is EventType.START:
                conn.execute(
                    "INSERT INTO jobs (run_id, taskset_id, task_id, job, start_ts) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, task_id, job) "
                    "DO UPDATE SET start_ts = excluded.start_ts",
                    (run_id, taskset_id, event.task_id, event.job, event.timestamp),
                )
            else:
                conn.execute(
                    "INSERT INTO jobs (run_id, taskset_id, task_id, job, end_ts, exit_type, "
                    "detail) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, task_id, job) "
                    "DO UPDATE SET end_ts = excluded.end_ts, exit_type = excluded.exit_type, "
                    "detail = excluded.detail",
                    (run_id, taskset_id, event.task_id, event.job, event.timestamp,
                     str(event.type), event.detail),
                )  # fmt: skip

    def _replace_finish(self, conn: sqlite3.Connection, taskset: Any, taskset_id: int) -> None:
        """Delete the latest finished run of the set but the current one (resumed re-run)."""
        row = conn.execute(
            "SELECT id, attempt FROM runs WHERE taskset_id = ? AND state = 'finished' "
            "AND id != ? ORDER BY attempt DESC LIMIT 1",
            (taskset_id, self._runs.get(taskset_id, -1)),
        ).fetchone()
        if row is None:
            return
        run_id, attempt = row
        conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,))
        conn.execute("DELETE FROM jobs WHERE run_id = ?", (run_id,))
        conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        log.info(
            "%s: finish of attempt %d (recorded before the farm stopped) replaced by this run",
            taskset_label(taskset),
            attempt,
        )

    def _settle(
        self, taskset: Any, run_state: str, state: SetState, tries: int | None = None
    ) -> None:
        now = time.time()
        with self._lock, self.connection as conn:
            taskset_id = self._taskset_row(conn, taskset)
            if state is SetState.FINISHED and taskset_replaces_finish(taskset):
                self._replace_finish(conn, taskset, taskset_id)
            self._end_run(conn, taskset_id, run_state, now)
            finished_at = now if state is SetState.FINISHED else None
            conn.execute(
                "UPDATE tasksets SET state = ?, finished_at = ?, tries = MAX(tries, ?) "
                "WHERE id = ?",
                (str(state), finished_at, tries or 0, taskset_id),
            )
        if state in (SetState.FINISHED, SetState.BAD):
            self._forget(taskset)

    def __taskset_finish__(self, taskset: Any) -> None:
        self._settle(taskset, "finished", SetState.FINISHED)

    def __taskset_stop__(self, taskset: Any) -> None:
        self._settle(taskset, "stopped", SetState.STOPPED)

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        self._settle(taskset, "stopped", SetState.BAD, tries)
