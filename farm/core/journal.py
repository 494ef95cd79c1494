"""Submission journal (SQLite in the state dir): what each submission has finished, to resume.

The tables keep their historical names (``jobs``: one row per submission).
A submission is keyed by a stable string (the task set's class and a fingerprint of
its template, or the name the user gives). A Distributor started again after
its process died re-adds the same task set (or calls ``resume()``) and only
the variants not yet finished or given up are run.

A finished variant is marked 'finishing' before its monitor is told and
'finished' once the monitor has seen all its events. A variant still
'finishing' when the farm is resumed runs again, and its monitor is told that
an earlier result of it may already be recorded (``Submission`` sets
``RunRecord.replaces_finish``): re-run, never lost, and not recorded twice.

Schema::

    jobs(id, key UNIQUE among unfinished, name, created, finished, state, pickle)
    variants(job_id, idx, state 'finishing'|'finished'|'bad', tries, at)  PK(job_id, idx)
"""

from __future__ import annotations

import pickle
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from farm.core.records import SetState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    state TEXT NOT NULL DEFAULT 'active',
    pickle BLOB
);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs(key, state);
CREATE TABLE IF NOT EXISTS variants (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    tries INTEGER NOT NULL DEFAULT 1,
    at REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
);
"""


#: SQLite page cache of the journal's connection, KiB
CACHE_KIB = 256


class Journal:
    """Durable record of job progress; one connection shared under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # small page cache: SQLite's default 2 MiB fills as journal.db grows over a long
        # campaign, which reads as a memory leak of the distributor (soak: +13 % RSS)
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.executescript(_SCHEMA)

    def open_job(self, key: str, name: str, taskset: object = None) -> tuple[int, set[int]]:
        """Return (job id, indices already settled); resumes an unfinished job with this key."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM jobs WHERE key=? AND state='active' ORDER BY id LIMIT 1", (key,)
            ).fetchone()
            if row is not None:
                job_id = int(row[0])
                done = {
                    i
                    for (i,) in self._db.execute(
                        "SELECT idx FROM variants WHERE job_id=? AND state!=?",
                        (job_id, str(SetState.FINISHING)),
                    )
                }
                return job_id, done
            blob = _try_pickle(taskset)
            cur = self._db.execute(
                "INSERT INTO jobs(key, name, created, pickle) VALUES (?,?,?,?)",
                (key, name, time.time(), blob),
            )
            return int(cur.lastrowid or 0), set()

    def mark_finishing(self, job_id: int, index: int) -> None:
        """Record that variant ``index`` finished and its monitor is being told (not settled yet).

        Written before the monitor hears of the finish, so a farm that dies before
        ``settle`` knows on resume that the monitor may have recorded it.
        """
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO variants(job_id, idx, state, tries, at) VALUES (?,?,?,1,?)",
                (job_id, index, str(SetState.FINISHING), time.time()),
            )

    def finishing(self, job_id: int) -> set[int]:
        """Indices whose finish reached the monitor (maybe) but was never settled."""
        with self._lock:
            return {
                i
                for (i,) in self._db.execute(
                    "SELECT idx FROM variants WHERE job_id=? AND state=?",
                    (job_id, str(SetState.FINISHING)),
                )
            }

    def settle(self, job_id: int, index: int, state: SetState, tries: int) -> None:
        """Record that variant ``index`` is finished or given up ('finished' | 'bad')."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO variants(job_id, idx, state, tries, at) VALUES (?,?,?,?,?)",
                (job_id, index, str(state), tries, time.time()),
            )

    def finish_job(self, job_id: int, state: str = "finished") -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state=?, finished=? WHERE id=?", (state, time.time(), job_id)
            )

    def unfinished(self) -> list[dict[str, Any]]:
        """Unfinished jobs, oldest first, with their unpickled task set when it could be stored."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, key, name, pickle FROM jobs WHERE state='active' ORDER BY id"
            ).fetchall()
        out = []
        for job_id, key, name, blob in rows:
            taskset = None
            if blob is not None:
                try:
                    taskset = pickle.loads(blob)
                except Exception:
                    taskset = None
            out.append({"id": job_id, "key": key, "name": name, "taskset": taskset})
        return out

    def counts(self, job_id: int) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM variants WHERE job_id=? GROUP BY state", (job_id,)
            ).fetchall()
        return {state: int(n) for state, n in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _try_pickle(obj: object) -> bytes | None:
    if obj is None:
        return None
    try:
        return pickle.dumps(obj)
    except Exception:
        return None
