"""PostgresMonitor against a real PostgreSQL server (farm.testing's farm_postgres fixture).

The server is private to the session: initdb in a temporary directory, run as
an unprivileged user, UNIX socket only. Without the binaries the tests skip,
except where CI=true (scripts/setup installs them), where they fail.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from farm.backend.fake import FakeBackend, session_class_for
from farm.config import FarmConfig
from farm.core.distributor import Distributor
from farm.core.journal import Journal
from farm.errors import ConfigError, ResultsError
from farm.events import Event, EventType
from farm.monitors import FINISHED_NOT_ONCE, PostgresMonitor, SqliteMonitor, resolve
from farm.report.data import load
from farm.taskset import Task, TaskSet
from tests.helpers import REPO, feed, run_farm, wait_for


class Variant:
    """A concrete variant as a farm run shows it to monitors (job_id, index, description)."""

    def __init__(self, index: int, *, again: bool = False, job_id: str = "job-a") -> None:
        self.index = index
        self.job_id = job_id
        self.name = job_id
        if again:
            self.replaces_finish = True

    def description(self) -> dict[str, Any]:
        return {
            "tasks": [
                {"id": 0, "pkg": "hey", "period": 1000, "numberofjobs": 2, "config": {}},
                {"id": 1, "pkg": "hey", "period": {"vary": [1, 2]}, "priority": 3},
            ]
        }


def pg(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def make(tmp_path: Path, name: str) -> tuple[Distributor, FakeBackend]:
    backend = FakeBackend()
    config = FarmConfig(
        state_dir=tmp_path / name / "state",
        log_dir=tmp_path / name / "log",
        idle_linger=0.05,
        heartbeat_timeout=2.0,
    )
    return Distributor(config, backend=backend, session_class=session_class_for(backend)), backend


def sets(n: int, period: int) -> TaskSet:
    return TaskSet([Task({"pkg": "hey", "period": period, "numberofjobs": 2, "x-run": range(n)})])


def test_same_tables_and_columns_as_sqlite(farm_postgres_url: str, tmp_path: Path) -> None:
    feed(PostgresMonitor(farm_postgres_url), Variant(0))
    lite = SqliteMonitor(tmp_path / "r.db")
    feed(lite, Variant(0))
    for table in ("tasksets", "runs", "tasks", "jobs", "events", "results"):
        with psycopg.connect(farm_postgres_url) as conn:
            cur = conn.execute(f"SELECT * FROM {table} LIMIT 0")
            ours = [d.name for d in cur.description or []]
        theirs = [d[0] for d in lite.connection.execute(f"SELECT * FROM {table}").description]
        assert ours == theirs, table
    lite.close()


def test_records_each_set_and_replaces_a_resumed_finish(farm_postgres_url: str) -> None:
    dead = PostgresMonitor(farm_postgres_url)  # the farm that died after recording the finish
    for i in range(3):
        feed(dead, Variant(i))
    feed(dead, Variant(3), finish=False)  # cut off while running
    dead.close()
    mon = PostgresMonitor(farm_postgres_url)
    feed(mon, Variant(1, again=True), t0=10.0)  # resumed re-run of a set already recorded
    feed(mon, Variant(3), t0=10.0)
    mon.close()
    assert pg(farm_postgres_url, FINISHED_NOT_ONCE) == []
    assert pg(farm_postgres_url, "SELECT variant, tries FROM tasksets ORDER BY variant") == [
        (0, 1),
        (1, 2),
        (2, 1),
        (3, 2),
    ]
    assert pg(farm_postgres_url, "SELECT state FROM runs WHERE attempt = 1 AND id = 4") == [
        ("stopped",)
    ]
    assert pg(farm_postgres_url, "SELECT start_ts FROM results WHERE variant = 1 ORDER BY job") == [
        (10.0,),
        (11.0,),
    ]
    # a value that is not one number stays in the description; the column holds NULL
    assert pg(farm_postgres_url, "SELECT period, priority FROM tasks WHERE task_id = 1")[0] == (
        None,
        3,
    )


def test_a_second_finish_without_the_flag_stays_visible(farm_postgres_url: str) -> None:
    mon = PostgresMonitor(farm_postgres_url)
    feed(mon, Variant(0))
    feed(mon, Variant(0))
    mon.close()
    assert pg(farm_postgres_url, FINISHED_NOT_ONCE) == [(1, "job-a", 0, 2)]


def test_writers_racing_on_one_set_agree_on_its_row_and_attempts(farm_postgres_url: str) -> None:
    errors: list[BaseException] = []

    def writer() -> None:
        mon = PostgresMonitor(farm_postgres_url)
        try:
            for i in range(8):
                mon.__taskset_start__(Variant(i))
                mon.__taskset_stop__(Variant(i))
        except BaseException as exc:
            errors.append(exc)
        finally:
            mon.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert pg(farm_postgres_url, "SELECT COUNT(*) FROM tasksets") == [(8,)]
    per_set = pg(farm_postgres_url, "SELECT taskset_id, MAX(attempt) FROM runs GROUP BY 1")
    assert sorted(a for _, a in per_set) == [4] * 8


def test_two_distributors_write_one_database_each_set_once(
    farm_postgres_url: str, tmp_path: Path
) -> None:
    one, backend_one = make(tmp_path, "one")
    two, _ = make(tmp_path, "two")
    try:
        one.add_job(sets(12, 10), PostgresMonitor(farm_postgres_url))
        two.add_job(sets(12, 20), PostgresMonitor(farm_postgres_url))
        one.set_max_machine_value(3)
        two.set_max_machine_value(3)
        wait_for("a guest of farm one", lambda: bool(backend_one.live_guests()), timeout=30)
        backend_one.live_guests()[0].crash()  # its set runs again, still recorded once
        assert one.wait_finished(timeout=60)
        assert two.wait_finished(timeout=60)
    finally:
        one.close()
        two.close()
    assert pg(farm_postgres_url, FINISHED_NOT_ONCE) == []
    assert pg(farm_postgres_url, "SELECT COUNT(DISTINCT job), COUNT(*) FROM tasksets") == [(2, 24)]
    assert pg(farm_postgres_url, "SELECT state, COUNT(*) FROM tasksets GROUP BY state") == [
        ("finished", 24)
    ]


def test_resume_after_a_death_in_the_window_records_each_set_once(
    farm_postgres_url: str, tmp_path: Path
) -> None:
    dist, _ = make(tmp_path, "farm")
    try:
        dist.add_job(sets(4, 10), PostgresMonitor(farm_postgres_url))
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    journal = Journal(tmp_path / "farm" / "state" / "journal.db")
    try:  # what a farm killed right after the monitor recorded set 2 leaves behind
        with sqlite3.connect(journal.path) as con:
            (job_id,) = {r[0] for r in con.execute("SELECT id FROM jobs")}
        journal.mark_finishing(job_id, 2)
        journal.finish_job(job_id, "active")
    finally:
        journal.close()
    dist, _ = make(tmp_path, "farm")
    try:
        (job,) = dist.resume(PostgresMonitor(farm_postgres_url))
        assert job.skipped == 3
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert pg(farm_postgres_url, FINISHED_NOT_ONCE) == []
    assert pg(farm_postgres_url, "SELECT variant FROM tasksets WHERE tries > 1") == [(2,)]


def test_report_reads_postgres_like_sqlite(farm_postgres_url: str, tmp_path: Path) -> None:
    lite = SqliteMonitor(tmp_path / "results.db")
    mon = PostgresMonitor(farm_postgres_url)
    for m in (lite, mon):
        for i in range(3):
            feed(m, Variant(i))
        feed(m, Variant(3), finish=False)
    lite.close()
    mon.close()
    a, b = load(tmp_path / "results.db"), load(farm_postgres_url)
    assert [(s.job, s.variant, s.state, s.tries, s.run_state) for s in a.sets] == [
        (s.job, s.variant, s.state, s.tries, s.run_state) for s in b.sets
    ]
    assert [s.jobs for s in a.sets] == [s.jobs for s in b.sets]
    assert b.name.startswith("farm_test_") and "host=" in b.source

    done = run_farm(tmp_path, "report", farm_postgres_url, "--out", str(tmp_path / "rep"))
    assert done.returncode == 0, done.stderr
    assert "farm_test_" in (tmp_path / "rep" / "index.html").read_text()


def test_report_of_a_database_without_farm_tables_is_bad_input(farm_postgres_url: str) -> None:
    with pytest.raises(ConfigError, match="not a farm results database"):
        load(farm_postgres_url)


def test_unreachable_server_names_it_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://farm:s3cret@/nodb?host={tmp_path}&connect_timeout=1"
    mon = PostgresMonitor(url)
    with pytest.raises(ResultsError, match="cannot open the results database") as info:
        mon.__taskset_start__(Variant(0))
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(mon)


def test_resolvable_by_name() -> None:
    assert resolve("PostgresMonitor") is PostgresMonitor


def test_farm_run_writes_postgres_named_by_the_environment(
    farm_postgres_url: str, tmp_path: Path
) -> None:
    done = run_farm(
        tmp_path,
        "run",
        "example.Hey1TaskSet",
        "--backend",
        "local",
        "--monitor",
        "PostgresMonitor",
        "--json",
        env={"FARM_POSTGRES_URL": farm_postgres_url},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert pg(farm_postgres_url, FINISHED_NOT_ONCE) == []
    assert pg(farm_postgres_url, "SELECT COUNT(*) FROM tasksets WHERE state = 'finished'") == [(3,)]


FARM_PROCESS = """
import sys
from pathlib import Path
from farm.backend.fake import FakeBackend, session_class_for
from farm.config import FarmConfig
from farm.core.distributor import Distributor
from farm.monitors import PostgresMonitor
from farm.taskset import Task, TaskSet

url, state, period = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
backend = FakeBackend()
config = FarmConfig(state_dir=state / "state", log_dir=state / "log", idle_linger=0.05)
dist = Distributor(config, backend=backend, session_class=session_class_for(backend))
try:
    sets = TaskSet([Task({"pkg": "hey", "period": period, "numberofjobs": 2, "x-run": range(10)})])
    dist.add_job(sets, PostgresMonitor(url))
    dist.set_max_machine_value(3)
    sys.exit(0 if dist.wait_finished(timeout=60) else 1)
finally:
    dist.close()
"""


def test_two_farm_processes_write_one_database_each_set_once(
    farm_postgres_url: str, tmp_path: Path
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FARM_PROCESS, farm_postgres_url, str(tmp_path / name), period],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, period in (("a", "10"), ("b", "30"))
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]
    assert pg(farm_postgres_url, FINISHED_NOT_ONCE) == []
    assert pg(farm_postgres_url, "SELECT COUNT(DISTINCT job), COUNT(*) FROM tasksets") == [(2, 20)]


def test_a_lost_connection_fails_one_call_and_the_next_reconnects(
    farm_postgres: Any, farm_postgres_url: str
) -> None:
    mon = PostgresMonitor(farm_postgres_url)
    feed(mon, Variant(0))
    mon.__taskset_start__(Variant(1))
    farm_postgres.restart()
    with pytest.raises(ResultsError, match="results database lost"):
        mon.__taskset_event__(Variant(1), Event(0, 0, EventType.START, 0.0))
    feed(mon, Variant(1), t0=5.0)  # the set runs again on a new connection
    mon.close()
    assert pg(farm_postgres_url, FINISHED_NOT_ONCE) == []
    assert pg(farm_postgres_url, "SELECT variant, tries FROM tasksets ORDER BY variant") == [
        (0, 1),
        (1, 2),
    ]
