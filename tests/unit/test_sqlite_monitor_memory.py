"""SqliteMonitor keeps no per-set state after a set is settled (a soak must stay flat)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from farm.monitors import FINISHED_NOT_ONCE, SqliteMonitor
from tests.unit.test_monitors import FakeVariant, feed


def test_settled_sets_leave_no_cached_rows(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    monitor = SqliteMonitor(db)
    for index in range(300):
        feed(monitor, FakeVariant(index=index, job_id=f"job{index % 3}"))
    bad = FakeVariant(index=999)
    feed(monitor, bad, finish=False)
    monitor.__taskset_bad__(bad, 3)
    assert monitor._rows == {} and monitor._runs == {} and monitor._anon == {}
    # a set seen again after settling (a duplicate run) still lands on its own row
    feed(monitor, FakeVariant(index=7, job_id="job1"))
    monitor.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tasksets").fetchone() == (301,)
        rows = conn.execute(FINISHED_NOT_ONCE).fetchall()
    assert [(job, variant, n) for _id, job, variant, n in rows] == [
        ("job1", 7, 2),
        ("job-a", 999, 0),
    ]
