"""FarmSession against the real agent subprocess, results through SqliteMonitor."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from farm.events import Event, EventType
from farm.monitors import FINISHED_NOT_ONCE, MonitorThread, SqliteMonitor
from farm.session import FarmSession
from farm.taskset import TaskSet
from farm.tasksets.example import Hey0TaskSet
from tests.process.conftest import AgentProcess


def session_for(agent: AgentProcess, **options: Any) -> FarmSession:
    """A FarmSession to the conftest's agent, with its token."""
    options.setdefault("token", agent.token)
    options.setdefault("connect_deadline", 20.0)
    return FarmSession(agent.host, agent.port, **options)


def concrete(taskset: TaskSet, job_id: str) -> TaskSet:
    """The first variant, named as the Distributor would name it."""
    variant = next(taskset.variants())
    variant.job_id = job_id  # type: ignore[attr-defined]
    return variant


def run_set(agent: AgentProcess, variant: TaskSet, db: Path) -> list[Event]:
    """Run one variant to its end, every hook through a MonitorThread'ed SqliteMonitor."""
    monitor = MonitorThread(SqliteMonitor(db))
    events: list[Event] = []
    try:
        with session_for(agent) as session:
            monitor.__taskset_start__(variant)
            session.start(variant)
            for _ in range(600):
                if session.finished():
                    break
                for event in session.run(1.0):
                    events.append(event)
                    monitor.__taskset_event__(variant, event)
            assert session.finished(), f"set did not finish: {events}"
            monitor.__taskset_finish__(variant)
    finally:
        monitor.close()
    assert monitor.errors == 0
    return events


def test_hey_set_end_to_end(agent: AgentProcess, tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    variant = concrete(Hey0TaskSet(), "hey0")
    events = run_set(agent, variant, db)
    (task_id,) = [t["id"] for t in variant.description()["tasks"]]
    job_events = [(e.task_id, e.job, e.type) for e in events if e.type is not EventType.NOTICE]
    assert job_events == [
        (task_id, 0, EventType.START),
        (task_id, 0, EventType.EXIT),
        (task_id, None, EventType.JOBS_DONE),
    ]
    with sqlite3.connect(db) as conn:
        assert conn.execute(FINISHED_NOT_ONCE).fetchall() == []
        assert conn.execute("SELECT job, variant, state FROM tasksets").fetchall() == [
            ("hey0", 0, "finished")
        ]
        assert conn.execute("SELECT task_id, job, exit_type FROM jobs").fetchall() == [
            (task_id, 0, "EXIT")
        ]
        (start, end) = conn.execute("SELECT start_ts, end_ts FROM jobs").fetchone()
        assert start <= end
    conn.close()


def periodic_with_a_late_task() -> TaskSet:
    """Three periodic tasks; task 3 idles 150 ms against a critical time of 60 ms.

    The others have periods that a job process (a Python start) meets even on a
    loaded 2-core host; 50 ms did not, and a skipped release failed the test.
    """
    common = {"config": {}, "offset": 0, "deadline": 0}
    return TaskSet(
        [
            {**common, "id": 1, "pkg": "hey", "priority": 10, "period": 250,
             "criticaltime": 240, "numberofjobs": 3},
            {**common, "id": 2, "pkg": "idle", "config": {"ms": 5}, "priority": 20,
             "period": 300, "criticaltime": 290, "numberofjobs": 3},
            {**common, "id": 3, "pkg": "idle", "config": {"ms": 150}, "priority": 30,
             "period": 400, "criticaltime": 60, "numberofjobs": 2},
        ],
        name="periodic",
    )  # fmt: skip


def test_periodic_set_with_a_missed_deadline(agent: AgentProcess, tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    variant = concrete(periodic_with_a_late_task(), "periodic")
    events = run_set(agent, variant, db)
    expected_jobs = {1: 3, 2: 3, 3: 2}
    with sqlite3.connect(db) as conn:
        assert conn.execute(FINISHED_NOT_ONCE).fetchall() == []
        jobs = conn.execute(
            "SELECT task_id, job, start_ts, end_ts, exit_type FROM results ORDER BY task_id, job"
        ).fetchall()
        done = conn.execute(
            "SELECT task_id FROM events WHERE type = 'JOBS_DONE' ORDER BY task_id"
        ).fetchall()
        stamps = [ts for (ts,) in conn.execute("SELECT ts FROM events ORDER BY id")]
    conn.close()
    # every job started and ended, with the right exit kind
    assert [(t, j) for t, j, *_ in jobs] == [
        (t, j) for t, n in expected_jobs.items() for j in range(n)
    ]
    assert all(start is not None and end is not None and start <= end for *_, start, end, _ in jobs)
    exits = {(t, j): x for t, j, _s, _e, x in jobs}
    assert {x for (t, _j), x in exits.items() if t == 3} == {"EXIT_CRITICAL"}
    assert {x for (t, _j), x in exits.items() if t != 3} <= {"EXIT", "EXIT_CRITICAL"}
    assert exits[(2, 0)] == "EXIT"  # a 5 ms job has ample slack, even on a loaded host
    assert done == [(1,), (2,), (3,)]
    assert stamps == sorted(stamps)  # the agent's clock never runs backwards
    assert len(stamps) == len(events)


def test_stop_while_running_leaves_no_job_processes(agent: AgentProcess) -> None:
    long = TaskSet(
        [
            {"id": 1, "pkg": "idle", "config": {"ms": 60_000}, "priority": 10, "period": 0,
             "numberofjobs": 1},
            {"id": 2, "pkg": "idle", "config": {"ms": 60_000}, "priority": 11, "period": 0,
             "numberofjobs": 1},
        ],
        name="long",
    )  # fmt: skip
    variant = concrete(long, "long")
    with session_for(agent) as session:
        session.start(variant)
        started: set[int] = set()
        for _ in range(100):
            started |= {e.task_id for e in session.run(1.0) if e.type is EventType.START}
            if started == {1, 2}:
                break
        assert started == {1, 2}
        assert agent.children(), "the jobs should be running"
        session.stop()
        assert agent.children() == []
        after: list[Event] = []
        for _ in range(20):
            after += session.run(0.2)
            if {e.task_id for e in after if e.type is EventType.EXIT_EXTERNAL} == {1, 2}:
                break
        assert sorted((e.task_id, e.job) for e in after if e.type is EventType.EXIT_EXTERNAL) == [
            (1, 0),
            (2, 0),
        ]
        assert not session.finished()
        assert session.ping() >= 0.0  # the agent still serves after a stop


def test_wrong_token_and_version_check_against_the_real_agent(agent: AgentProcess) -> None:
    from farm.errors import AuthError

    with session_for(agent, token="not-the-token") as session, pytest.raises(AuthError):
        session.connect()
    with session_for(agent) as session:
        session.connect()
        assert session.hello is not None
        status = session.status()
        assert status["agent_version"] == session.hello["agent_version"]
    assert FarmSession.is_available(agent.host, agent.port)
