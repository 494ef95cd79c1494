"""A set whose finish reached its monitor but not the journal is re-run, never recorded twice.

The journal marks a finished set 'finishing' before its monitor is told and
'finished' after; a set still 'finishing' on resume runs again with
``replaces_finish`` set, and SqliteMonitor replaces the earlier finished run
(CSV and log monitors, which cannot un-write, mark the new finish).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from farm import Distributor
from farm.backend.fake import FakeBackend, session_class_for
from farm.config import FarmConfig
from farm.core.journal import Journal
from farm.core.submission import Submission
from farm.monitors import (
    FINISHED_NOT_ONCE,
    CsvMonitor,
    LoggingMonitor,
    SqliteMonitor,
)
from farm.monitors.csvfile import REPLACES_FINISH
from farm.monitors.thread import NullMonitor
from farm.taskset import Task, TaskSet
from tests.helpers import feed


class Variant:
    """A concrete variant as a farm run shows it to monitors (job_id, index, description)."""

    def __init__(self, index: int, *, again: bool = False, job_id: str = "job-a") -> None:
        self.index = index
        self.job_id = job_id
        self.name = job_id
        if again:
            self.replaces_finish = True

    def description(self) -> dict[str, Any]:
        return {"tasks": [{"id": 0, "pkg": "hey", "numberofjobs": 2, "config": {}}]}


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute(sql).fetchall()


def many(n: int) -> TaskSet:
    return TaskSet([Task({"pkg": "hey", "period": 10, "numberofjobs": 2, "x-run": range(n)})])


# -- SqliteMonitor ----------------------------------------------------------------------


def test_rerun_after_resume_replaces_the_recorded_finish(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    dead = SqliteMonitor(db)  # the farm that died after recording the finish
    feed(dead, Variant(3), t0=0.0)
    feed(dead, Variant(4), t0=0.0)
    dead.close()

    resumed = SqliteMonitor(db)  # a new process: nothing cached
    again = Variant(3, again=True)
    feed(resumed, again, finish=False, t0=100.0)
    resumed.__taskset_stop__(again)  # a stopped attempt in between is kept, as always
    feed(resumed, again, t0=200.0)
    resumed.close()

    assert rows(db, FINISHED_NOT_ONCE) == []
    assert rows(db, "SELECT variant, state, tries FROM tasksets ORDER BY variant") == [
        (3, "finished", 3),
        (4, "finished", 1),
    ]
    runs = rows(db, "SELECT attempt, state FROM runs WHERE taskset_id = 1 ORDER BY attempt")
    assert runs == [(2, "stopped"), (3, "finished")]  # attempt 1's finish was replaced
    # results and finished events of variant 3 are the latest attempt's only
    assert rows(db, "SELECT start_ts FROM results WHERE variant = 3 ORDER BY job") == [
        (200.0,),
        (201.0,),
    ]
    finished_events = rows(
        db,
        "SELECT MIN(e.ts), COUNT(*) FROM events e JOIN runs r ON r.id = e.run_id "
        "WHERE e.taskset_id = 1 AND r.state = 'finished'",
    )
    assert finished_events == [(200.0, 5)]
    assert rows(db, "SELECT COUNT(*) FROM events WHERE taskset_id = 1") == [(10,)]  # 5 stopped
    assert rows(db, "SELECT COUNT(*) FROM results WHERE variant = 4") == [(2,)]  # untouched


def test_rerun_without_an_earlier_record_just_finishes(tmp_path: Path) -> None:
    """The farm may have died before the monitor wrote the finish: nothing to replace."""
    db = tmp_path / "results.db"
    dead = SqliteMonitor(db)
    feed(dead, Variant(0), finish=False)  # its run was still 'running' when the farm died
    dead.close()
    resumed = SqliteMonitor(db)
    feed(resumed, Variant(0, again=True), t0=50.0)
    resumed.close()
    assert rows(db, FINISHED_NOT_ONCE) == []
    assert rows(db, "SELECT attempt, state FROM runs ORDER BY attempt") == [
        (1, "stopped"),  # left 'running' by the dead farm, closed when the set started again
        (2, "finished"),
    ]
    assert rows(db, "SELECT COUNT(*), MIN(start_ts) FROM results") == [(2, 50.0)]


def test_rerun_replaces_again_after_a_second_crash(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    for attempt in range(3):  # died in the window twice, then settled
        mon = SqliteMonitor(db)
        feed(mon, Variant(7, again=attempt > 0), t0=attempt * 10.0)
        mon.close()
    assert rows(db, FINISHED_NOT_ONCE) == []
    assert rows(db, "SELECT attempt, state FROM runs") == [(3, "finished")]
    assert rows(db, "SELECT COUNT(*) FROM events") == [(5,)]
    assert rows(db, "SELECT MIN(start_ts) FROM results") == [(20.0,)]


def test_a_second_finish_without_the_flag_stays_visible(tmp_path: Path) -> None:
    """Only a resumed re-run replaces: a set finished twice by a bug is still caught."""
    db = tmp_path / "results.db"
    mon = SqliteMonitor(db)
    feed(mon, Variant(1))
    feed(mon, Variant(1))
    mon.close()
    assert [r[1:] for r in rows(db, FINISHED_NOT_ONCE)] == [("job-a", 1, 2)]


# -- append-only monitors -----------------------------------------------------------------


def test_csv_and_log_mark_the_finish_of_a_resumed_rerun(tmp_path: Path) -> None:
    csv_path, log_path = tmp_path / "events.csv", tmp_path / "monitor.log"
    for again in (False, True):
        for mon in (CsvMonitor(csv_path), LoggingMonitor(log_path)):
            feed(mon, Variant(2, again=again))
            mon.close()
    with csv_path.open(newline="") as f:
        finished = [
            (r["variant"], r["detail"]) for r in csv.DictReader(f) if r["type"] == "FINISHED"
        ]
    assert finished == [("2", ""), ("2", REPLACES_FINISH)]
    lines = log_path.read_text().splitlines()
    starts = [line for line in lines if "START   job-a" in line]
    finishes = [line for line in lines if "FINISH  job-a" in line]
    assert "re-run" not in starts[0] and "re-run" in starts[1]
    assert "replaces" not in finishes[0] and "replaces an earlier FINISH" in finishes[1]


# -- journal and job ------------------------------------------------------------------------


def test_journal_finishing_is_not_settled(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        job_id, settled = journal.open_job("k", "TaskSet")
        journal.settle(job_id, 0, "finished", 1)
        journal.mark_finishing(job_id, 1)
        journal.mark_finishing(job_id, 2)
        journal.settle(job_id, 2, "finished", 1)
        again_id, settled = journal.open_job("k", "TaskSet")  # what a resumed farm sees
        assert again_id == job_id
        assert settled == {0, 2}
        assert journal.finishing(job_id) == {1}
    finally:
        journal.close()


def test_submission_flags_only_the_unsettled_finishes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        ts = many(5)
        first = Submission(ts, NullMonitor(), (), key="k", set_tries=3, journal=journal)
        taken = [first.take() for _ in range(3)]
        first.complete(taken[0])
        first.finishing(taken[1])  # farm dies: 1 told to its monitor, 2 still running
        with caplog.at_level(logging.WARNING, logger="farm.core.submission"):
            resumed = Submission(many(5), NullMonitor(), (), key="k", set_tries=3, journal=journal)
        assert resumed.skipped == 1
        variants = [resumed.take() for _ in range(4)]
        assert [v.index for v in variants] == [1, 2, 3, 4]
        assert [v.replaces_finish for v in variants] == [True, False, False, False]
        assert any("sets 1 finished before the farm stopped" in r.message for r in caplog.records)
        resumed.complete(variants[0])
        assert journal.finishing(resumed.journal_id or 0) == set()
    finally:
        journal.close()


# -- distributor ----------------------------------------------------------------------------


def make(tmp_path: Path) -> Distributor:
    backend = FakeBackend()
    config = FarmConfig(
        state_dir=tmp_path / "state",
        log_dir=tmp_path / "log",
        idle_linger=0.05,
        heartbeat_timeout=2.0,
    )
    return Distributor(config, backend=backend, session_class=session_class_for(backend))


class JournalPeek(SqliteMonitor):
    """Records the journal's state of each set when its finish reaches the monitor."""

    def __init__(self, path: Path, journal: Path) -> None:
        super().__init__(path)
        self.journal = journal
        self.seen: dict[int, str | None] = {}
        self.lock = threading.Lock()

    def __taskset_finish__(self, taskset: Any) -> None:
        super().__taskset_finish__(taskset)
        found = rows(self.journal, f"SELECT state FROM variants WHERE idx = {taskset.index}")
        with self.lock:
            self.seen[taskset.index] = found[0][0] if found else None


def test_journal_says_finishing_when_the_monitor_records_and_finished_after(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "state" / "journal.db"
    dist = make(tmp_path)
    mon = JournalPeek(tmp_path / "results.db", journal)
    try:
        dist.add_job(many(6), mon)
        dist.set_max_machine_value(2)
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert mon.seen == dict.fromkeys(range(6), "finishing")  # never settled before recorded
    assert rows(journal, "SELECT state, COUNT(*) FROM variants GROUP BY state") == [("finished", 6)]


def test_resume_after_a_death_in_the_window_records_each_set_once(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    dist = make(tmp_path)
    try:
        dist.add_job(many(6), SqliteMonitor(db))
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    # what a farm killed right after the monitor recorded sets 2 and 4 leaves behind
    journal = Journal(tmp_path / "state" / "journal.db")
    try:
        (job_id,) = {r[0] for r in rows(journal.path, "SELECT id FROM jobs")}
        journal.mark_finishing(job_id, 2)
        journal.mark_finishing(job_id, 4)
        journal.finish_job(job_id, "active")
    finally:
        journal.close()

    dist = make(tmp_path)
    try:
        (job,) = dist.resume(SqliteMonitor(db))
        assert job.skipped == 4
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert rows(db, FINISHED_NOT_ONCE) == []
    assert rows(db, "SELECT variant, tries FROM tasksets WHERE tries > 1 ORDER BY variant") == [
        (2, 2),
        (4, 2),
    ]
    assert rows(db, "SELECT COUNT(*) FROM runs") == [(6,)]
    per_set = rows(db, "SELECT variant, COUNT(*) FROM results GROUP BY variant")
    assert per_set == [(i, 2) for i in range(6)]  # two jobs of one run each
