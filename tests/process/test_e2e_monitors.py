"""One real task set, from the agent through a FarmSession into all three file monitors."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

from farm.events import EXIT_TYPES, EventType
from farm.monitors import (
    FINISHED_NOT_ONCE,
    CsvMonitor,
    FanoutMonitor,
    LoggingMonitor,
    MonitorThread,
    SqliteMonitor,
)
from farm.session import FarmSession
from farm.tasksets.example import PeriodicTaskSet
from tests.process.conftest import AgentProcess


def test_three_monitors_agree_on_a_periodic_set(agent: AgentProcess, tmp_path: Path) -> None:
    variant = next(PeriodicTaskSet().variants())
    variant.job_id = "periodic"  # type: ignore[attr-defined]
    fan = FanoutMonitor(
        [
            LoggingMonitor(tmp_path / "log" / "monitor.log"),
            CsvMonitor(tmp_path / "events.csv"),
            SqliteMonitor(tmp_path / "results.db"),
        ]
    )
    monitor = MonitorThread(fan)
    received = 0
    try:
        with FarmSession(agent.host, agent.port, token=agent.token) as session:
            monitor.__taskset_start__(variant)
            session.start(variant)
            for _ in range(600):
                if session.finished():
                    break
                for event in session.run(1.0):
                    received += 1
                    monitor.__taskset_event__(variant, event)
            assert session.finished()
            monitor.__taskset_finish__(variant)
    finally:
        monitor.close()
    assert fan.errors == 0 and monitor.errors == 0

    rows = list(csv.DictReader((tmp_path / "events.csv").open()))
    assert len(rows) == received + 1 and rows[-1]["type"] == "FINISHED"
    log_lines = (tmp_path / "log" / "monitor.log").read_text().splitlines()
    assert len(log_lines) == received + 2
    with sqlite3.connect(tmp_path / "results.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (received,)
        assert conn.execute(FINISHED_NOT_ONCE).fetchall() == []
        per_task = dict(
            conn.execute("SELECT task_id, COUNT(*) FROM results GROUP BY task_id").fetchall()
        )
    conn.close()
    expected = {t["id"]: t["numberofjobs"] for t in variant.description()["tasks"]}
    assert per_task == expected
    # each job either started or was skipped (NOT_SCHEDULED: its release came too late)
    starts = sum(r["type"] == str(EventType.START) for r in rows)
    skipped = sum(r["type"] == str(EventType.NOT_SCHEDULED) for r in rows)
    assert starts + skipped == sum(expected.values())
    exits = [r for r in rows if r["type"] in {str(t) for t in EXIT_TYPES}]
    assert len(exits) == sum(expected.values())
