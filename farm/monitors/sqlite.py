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

The store itself is farm.monitors.sqlstore (shared with PostgresMonitor); this
module adds SQLite's connection (WAL), types and row ids.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from farm.monitors.sqlstore import (
    FINISHED_NOT_ONCE,
    TASK_COLUMNS,
    SqlStoreMonitor,
    description_json,
)

#: SQLite page cache of the monitor's connection, KiB
CACHE_KIB = 512


def _sql_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float | str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


class SqliteMonitor(SqlStoreMonitor[sqlite3.Connection]):
    """Stores task sets, attempts, tasks, jobs and events in an SQLite file (WAL)."""

    SCHEMA_TYPES: ClassVar[dict[str, str]] = {
        "pk": "INTEGER PRIMARY KEY",
        "ref": "INTEGER",
        "real": "REAL",
        "number": "NUMERIC",
        "view": "VIEW IF NOT EXISTS",
    }
    INSERT_TASK: ClassVar[tuple[str, str]] = ("INSERT OR IGNORE INTO", "")

    def __init__(self, path: str | Path = "results.db") -> None:
        """The database is opened (and its schema created) on the first hook call."""
        super().__init__()
        self.path = Path(path) if str(path) != ":memory:" else path

    def _open(self) -> sqlite3.Connection:
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
        return conn

    @contextmanager
    def _transaction(self, action: str, taskset: Any) -> Iterator[sqlite3.Connection]:
        with self._lock, self.connection as conn:
            yield conn

    def _insert_id(self, conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
        return int(self._run(conn, sql, args).lastrowid or 0)

    def _insert_taskset(
        self, conn: sqlite3.Connection, job: str, variant: int | None, taskset: Any
    ) -> tuple[int, bool]:
        if variant is not None and (row_id := self._select_taskset(conn, job, variant)) is not None:
            return row_id, False
        sql = "INSERT INTO tasksets (job, variant, description, state) VALUES (?, ?, ?, 'started')"
        return self._insert_id(conn, sql, (job, variant, description_json(taskset))), True

    def _task_values(self, task: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(_sql_value(task.get(c)) for c in TASK_COLUMNS)


SCHEMA = SqliteMonitor.schema()
"""SQLite's CREATE statements of the results store."""

__all__ = ["CACHE_KIB", "FINISHED_NOT_ONCE", "SCHEMA", "SqliteMonitor"]
