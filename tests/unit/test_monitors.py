"""Monitors: log, CSV and SQLite writers, the serialising thread, fan-out and registry."""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from farm import monitors
from farm.errors import ConfigError
from farm.events import Event, EventType
from farm.monitors import (
    FINISHED_NOT_ONCE,
    AbstractMonitor,
    CsvMonitor,
    FanoutMonitor,
    LoggingMonitor,
    MonitorThread,
    SqliteMonitor,
)


class FakeVariant:
    """A concrete variant as the Distributor hands it out: job_id, name, index, description."""

    def __init__(self, index: int | None = 0, job_id: str = "job-a", tasks: int = 2) -> None:
        self.index = index
        self.job_id = job_id
        self.name = job_id
        self._tasks = [
            {
                "id": i,
                "pkg": "hey",
                "config": {"n": i},
                "priority": 10 + i,
                "period": 20,
                "executiontime": 5,
                "criticaltime": 10,
                "deadline": 0,
                "offset": 0,
                "numberofjobs": 2,
                "quota": 1024,
            }
            for i in range(tasks)
        ]

    def description(self) -> dict[str, Any]:
        return {"tasks": self._tasks}


def job_events(task_id: int, jobs: int = 2, late: int | None = None) -> list[Event]:
    out: list[Event] = []
    for job in range(jobs):
        out.append(Event(task_id, job, EventType.START, job * 0.02))
        kind = EventType.EXIT_CRITICAL if job == late else EventType.EXIT
        out.append(Event(task_id, job, kind, job * 0.02 + 0.005, "late" if job == late else None))
    out.append(Event(task_id, None, EventType.JOBS_DONE, jobs * 0.02))
    return out


def feed(monitor: Any, variant: Any, *, finish: bool = True, late: int | None = None) -> None:
    monitor.__taskset_start__(variant)
    for task in variant.description()["tasks"]:
        for event in job_events(task["id"], late=late):
            monitor.__taskset_event__(variant, event)
    if finish:
        monitor.__taskset_finish__(variant)


# -- LoggingMonitor ----------------------------------------------------------------------


def test_logging_monitor_writes_one_line_per_hook(tmp_path: Path) -> None:
    path = tmp_path / "log" / "monitor.log"
    global_handlers = list(logging.getLogger().handlers) + list(logging.getLogger("farm").handlers)
    monitor = LoggingMonitor(path)
    variant = FakeVariant(index=3)
    feed(monitor, variant)
    monitor.__taskset_stop__(variant)
    monitor.__taskset_bad__(variant, 4)
    monitor.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 2 * 5 + 3
    assert "START   job-a#3 tasks=[0,1]" in lines[0]
    assert "EVENT   job-a#3 task=0 job=0 START" in lines[1]
    assert "FINISH  job-a#3" in lines[-3]
    assert "STOP" in lines[-2] and "BAD" in lines[-1] and "4 tries" in lines[-1]
    # its own logger and handler: nothing registered or attached globally
    assert not any(name.startswith("farm.monitor[") for name in logging.root.manager.loggerDict)
    assert list(logging.getLogger().handlers) + list(logging.getLogger("farm").handlers) == (
        global_handlers
    )


# -- CsvMonitor --------------------------------------------------------------------------


def test_csv_monitor_rows(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    monitor = CsvMonitor(path)
    variant = FakeVariant(index=1, tasks=1)
    feed(monitor, variant, late=1)
    monitor.__taskset_stop__(variant)
    monitor.__taskset_bad__(variant, 2)
    # flushed per row: readable before close
    rows = list(csv.DictReader(path.open()))
    monitor.close()
    assert [r["type"] for r in rows] == [
        "START", "EXIT", "START", "EXIT_CRITICAL", "JOBS_DONE", "FINISHED", "STOPPED", "BAD",
    ]  # fmt: skip
    assert {r["taskset"] for r in rows} == {"job-a"} and {r["variant"] for r in rows} == {"1"}
    assert rows[3]["job"] == "1" and rows[3]["detail"] == "late"
    assert float(rows[3]["timestamp"]) == pytest.approx(0.025)
    assert rows[-1]["detail"] == "tries=2" and rows[-1]["task_id"] == ""
    # reopening appends without a second header
    CsvMonitor(path).__taskset_finish__(variant)
    assert path.read_text().count("wall_time") == 1


# -- SqliteMonitor -----------------------------------------------------------------------


def test_sqlite_schema_and_rows(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    monitor = SqliteMonitor(db)
    variant = FakeVariant(index=0)
    feed(monitor, variant, late=1)
    monitor.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"tasksets", "runs", "tasks", "jobs", "events"} <= tables
    job, index, desc, state, tries = conn.execute(
        "SELECT job, variant, description, state, tries FROM tasksets"
    ).fetchone()
    assert (job, index, state, tries) == ("job-a", 0, "finished", 1)
    assert json.loads(desc) == variant.description()
    tasks = conn.execute(
        'SELECT task_id, pkg, priority, period, "offset", numberofjobs, quota, config FROM tasks'
    ).fetchall()
    assert tasks == [(0, "hey", 10, 20, 0, 2, 1024, '{"n": 0}'),
                     (1, "hey", 11, 20, 0, 2, 1024, '{"n": 1}')]  # fmt: skip
    jobs = conn.execute(
        "SELECT task_id, job, start_ts, end_ts, exit_type, detail FROM jobs ORDER BY task_id, job"
    ).fetchall()
    assert [(t, j, e) for t, j, _s, _e, e, _d in jobs] == [
        (0, 0, "EXIT"), (0, 1, "EXIT_CRITICAL"), (1, 0, "EXIT"), (1, 1, "EXIT_CRITICAL"),
    ]  # fmt: skip
    assert all(start < end for _t, _j, start, end, _x, _d in jobs)
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (10,)
    assert conn.execute("SELECT COUNT(*) FROM events WHERE type = 'JOBS_DONE'").fetchone() == (2,)
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone() == (4,)
    assert conn.execute(FINISHED_NOT_ONCE).fetchall() == []
    conn.close()


def test_sqlite_stopped_then_rerun_finishes_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    monitor = SqliteMonitor(db)
    first = FakeVariant(index=5)
    feed(monitor, first, finish=False)
    monitor.__taskset_stop__(first)
    again = FakeVariant(index=5)  # the re-queued variant (a fresh object, same identity)
    feed(monitor, again)
    other = FakeVariant(index=6)
    feed(monitor, other)
    monitor.close()
    conn = sqlite3.connect(db)
    assert conn.execute(FINISHED_NOT_ONCE).fetchall() == []
    assert conn.execute(
        "SELECT variant, state, tries FROM tasksets ORDER BY variant"
    ).fetchall() == [(5, "finished", 2), (6, "finished", 1)]
    assert conn.execute(
        "SELECT attempt, state FROM runs WHERE taskset_id = 1 ORDER BY attempt"
    ).fetchall() == [(1, "stopped"), (2, "finished")]
    # jobs of both attempts are kept, the results view shows the finished one only
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone() == (12,)
    assert conn.execute("SELECT COUNT(*) FROM results WHERE variant = 5").fetchone() == (4,)
    conn.close()


def test_sqlite_duplicate_finish_is_visible_to_the_check(tmp_path: Path) -> None:
    monitor = SqliteMonitor(tmp_path / "r.db")
    feed(monitor, FakeVariant(index=0))
    feed(monitor, FakeVariant(index=0))  # a bug elsewhere would run it twice
    rows = monitor.connection.execute(FINISHED_NOT_ONCE).fetchall()
    monitor.close()
    assert [(job, variant, n) for _id, job, variant, n in rows] == [("job-a", 0, 2)]


def test_sqlite_bad_and_anonymous_task_sets(tmp_path: Path) -> None:
    monitor = SqliteMonitor(tmp_path / "r.db")
    bad = FakeVariant(index=9)
    for _ in range(3):
        monitor.__taskset_start__(bad)
        monitor.__taskset_stop__(bad)
    monitor.__taskset_bad__(bad, 3)
    plain = FakeVariant(index=None, job_id="plain")
    feed(monitor, plain)
    feed(monitor, plain)  # no index: every run is its own task set row
    conn = monitor.connection
    assert conn.execute("SELECT state, tries FROM tasksets WHERE variant = 9").fetchone() == (
        "bad",
        3,
    )
    assert conn.execute("SELECT COUNT(*) FROM tasksets WHERE job = 'plain'").fetchone() == (2,)
    monitor.close()


def test_sqlite_event_without_start_opens_a_run(tmp_path: Path) -> None:
    monitor = SqliteMonitor(tmp_path / "r.db")
    variant = FakeVariant(index=0)
    monitor.__taskset_event__(variant, Event(0, 0, EventType.START, 1.0))
    assert monitor.connection.execute("SELECT state FROM runs").fetchall() == [("running",)]
    monitor.close()


# -- MonitorThread -----------------------------------------------------------------------


class Recorder(AbstractMonitor):
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.closed = False

    def _note(self, hook: str, arg: Any) -> None:
        self.threads.add(threading.current_thread().name)
        self.calls.append((hook, arg))
        if hook == self.fail_on:
            raise RuntimeError(f"boom in {hook}")

    def __taskset_start__(self, taskset: Any) -> None:
        self._note("start", taskset.index)

    def __taskset_event__(self, taskset: Any, event: Event) -> None:
        self._note("event", (event.task_id, event.job, str(event.type)))

    def __taskset_finish__(self, taskset: Any) -> None:
        self._note("finish", taskset.index)

    def __taskset_stop__(self, taskset: Any) -> None:
        self._note("stop", taskset.index)

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        self._note("bad", tries)

    def close(self) -> None:
        self.closed = True


def test_monitor_thread_keeps_order_on_its_own_thread() -> None:
    inner = Recorder()
    wrapped = MonitorThread(inner, name="mon-test")
    try:
        for index in range(20):
            feed(wrapped, FakeVariant(index=index, tasks=1))
        assert wrapped.flush(10)
        expected: list[tuple[str, Any]] = []
        for index in range(20):
            expected.append(("start", index))
            expected += [("event", (e.task_id, e.job, str(e.type))) for e in job_events(0)]
            expected.append(("finish", index))
        assert inner.calls == expected
        assert inner.threads == {"mon-test"}
    finally:
        wrapped.close()
    assert inner.closed and not wrapped.alive


def test_monitor_thread_logs_and_swallows_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    inner = Recorder(fail_on="start")
    wrapped = MonitorThread(inner)
    variant = FakeVariant(index=1, tasks=1)
    with caplog.at_level(logging.ERROR, logger="farm.monitors.thread"):
        feed(wrapped, variant)
        wrapped.__taskset_bad__(variant, 3)
        wrapped.close()
    assert wrapped.errors == 1
    assert inner.calls[-1] == ("bad", 3)  # later calls still ran
    record = next(r for r in caplog.records if "__taskset_start__" in r.getMessage())
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


def test_monitor_thread_close_is_idempotent_and_drops_late_calls() -> None:
    inner = Recorder()
    wrapped = MonitorThread(inner)
    wrapped.close()
    wrapped.close()
    wrapped.__taskset_start__(FakeVariant())
    assert wrapped.flush(1)
    assert inner.calls == []


def test_monitor_thread_runs_sqlite_from_another_thread(tmp_path: Path) -> None:
    wrapped = MonitorThread(SqliteMonitor(tmp_path / "r.db"))
    feed(wrapped, FakeVariant(index=0))
    wrapped.close()
    conn = sqlite3.connect(tmp_path / "r.db")
    assert conn.execute("SELECT state FROM tasksets").fetchall() == [("finished",)]
    conn.close()


def test_fanout_calls_every_monitor_even_after_a_failure() -> None:
    first, second = Recorder(fail_on="finish"), Recorder()
    fan = FanoutMonitor([first, second])
    feed(fan, FakeVariant(index=0, tasks=1))
    fan.close()
    assert first.calls == second.calls
    assert fan.errors == 1
    assert first.closed and second.closed


def test_default_hooks_do_nothing() -> None:
    monitor = AbstractMonitor()
    feed(monitor, FakeVariant())
    monitor.__taskset_stop__(FakeVariant())
    monitor.__taskset_bad__(FakeVariant(), 1)
    monitor.close()


# -- registry ----------------------------------------------------------------------------


class DuckMonitor:
    """Has a hook but no AbstractMonitor base (like taskgen's monitors)."""

    def __taskset_event__(self, taskset: Any, event: Event) -> None:
        pass


def test_resolve_and_available() -> None:
    assert monitors.resolve("SqliteMonitor") is SqliteMonitor
    assert monitors.resolve("monitors.CsvMonitor") is CsvMonitor
    assert monitors.resolve("farm.monitors.logfile:LoggingMonitor") is LoggingMonitor
    assert monitors.resolve(f"{__name__}:DuckMonitor") is DuckMonitor
    with pytest.raises(ConfigError):
        monitors.resolve("NoSuchMonitor")
    with pytest.raises(ConfigError):
        monitors.resolve("farm.events:Event")
    listed = dict(monitors.available())
    assert {"LoggingMonitor", "CsvMonitor", "SqliteMonitor", "FanoutMonitor"} <= set(listed)
    assert all(listed.values())


def test_monitor_thread_then_runs_after_the_hooks_queued_before_it() -> None:
    """Distributor settles a finished set through then(): results first, journal after."""
    inner = Recorder()
    wrapped = MonitorThread(inner, name="mon-then")
    seen: list[tuple[list[tuple[str, Any]], str]] = []
    try:
        variant = FakeVariant(index=7, tasks=1)
        feed(wrapped, variant)
        wrapped.then(lambda: seen.append((list(inner.calls), threading.current_thread().name)))
        assert wrapped.flush(10)
    finally:
        wrapped.close()
    assert len(seen) == 1
    calls, thread = seen[0]
    assert calls[-1] == ("finish", 7)  # every hook queued before it had run
    assert thread == "mon-then"


def test_monitor_thread_then_after_close_runs_at_once_and_is_never_dropped() -> None:
    wrapped = MonitorThread(Recorder())
    wrapped.close()
    ran: list[str] = []
    wrapped.then(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]


def test_monitor_thread_then_survives_a_failing_callback(caplog: pytest.LogCaptureFixture) -> None:
    wrapped = MonitorThread(Recorder())
    after: list[int] = []

    def boom() -> None:
        raise RuntimeError("callback boom")

    with caplog.at_level(logging.ERROR, logger="farm.monitors.thread"):
        wrapped.then(boom)
        wrapped.then(lambda: after.append(1))
        assert wrapped.flush(10)
        wrapped.close()
    assert after == [1]
    assert any("callback boom" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
