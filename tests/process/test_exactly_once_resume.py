"""The distributor killed between a set's recorded finish and its journal settle: recorded once.

A job of short sets runs on real agent processes (local backend) in a child
process whose monitor is a fault-injection point: right after every monitor
(SqliteMonitor, CsvMonitor, LoggingMonitor) has recorded the finish of set
``CRASH_AT`` it SIGKILLs its own process, so the journal's settle (queued
behind the hook on the same monitor thread) never runs. The job is resumed,
dies the same way on the re-run of that set, and is resumed to the end. The
set ran three times; results.db holds it once (the latest run), the CSV
marks every later FINISHED row of it, and the journal has every set finished.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest

from farm.monitors import FINISHED_NOT_ONCE
from farm.monitors.csvfile import REPLACES_FINISH
from tests.helpers import farm_agents

ROOT = Path(__file__).resolve().parents[2]
SETS = 10
CRASH_AT = 4  # in the second wave of three machines: sets settled before it, others running

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from farm.config import FarmConfig
    from farm import Distributor
    from farm.monitors import CsvMonitor, FanoutMonitor, LoggingMonitor, SqliteMonitor
    from farm.taskset import Task, TaskSet

    tmp, mode, sets, crash_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    class KillAfterFinish(FanoutMonitor):
        # fault injection: die after every monitor recorded the finish, before the settle
        def __taskset_finish__(self, taskset):
            super().__taskset_finish__(taskset)
            if taskset.index == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = FarmConfig(backend="local", state_dir=tmp + "/state", log_dir=tmp + "/log",
                     heartbeat=0.2, heartbeat_timeout=2.0, idle_linger=0.2)
    dist = Distributor(cfg)
    dist.set_max_machine_value(3)
    monitor = KillAfterFinish([SqliteMonitor(tmp + "/results.db"),
                               CsvMonitor(tmp + "/events.csv"),
                               LoggingMonitor(tmp + "/monitor.log")])
    if mode == "first":
        ts = TaskSet([Task({"pkg": "idle", "config": {"ms": 100}, "numberofjobs": 2,
                            "x-run": range(sets)})])
        jobs = [dist.add_job(ts, monitor)]
    else:
        jobs = dist.resume(monitor)
    print("resumed", len(jobs), "skipped", sum(j.skipped for j in jobs), flush=True)
    ok = dist.wait_finished(timeout=300)
    dist.close()
    print("done" if ok else "timed out", flush=True)
    """
)


def wait_agents_gone(tmp: Path, timeout: float = 30.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    left = farm_agents(tmp)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = farm_agents(tmp)
    return left


def run(tmp: Path, mode: str, crash_at: int, n: int) -> tuple[int, str]:
    """Run the child to its end (killed by its own fault injection, or done)."""
    script = tmp / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp / f"run{n}.stderr").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp), mode, str(SETS), str(crash_at)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            out, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    return proc.returncode, out


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute(sql).fetchall()


@pytest.mark.timeout(600)
def test_killed_between_recorded_finish_and_settle_each_set_recorded_once(
    tmp_path: Path,
) -> None:
    for n, mode in enumerate(("first", "resume"), 1):
        rc, out = run(tmp_path, mode, CRASH_AT, n)
        stderr = (tmp_path / f"run{n}.stderr").read_text()[-3000:]
        assert rc == -signal.SIGKILL, (rc, out, stderr)
        assert wait_agents_gone(tmp_path) == [], "agents of the killed farm left running"
    rc, out = run(tmp_path, "resume", -1, 3)
    assert rc == 0, (tmp_path / "run3.stderr").read_text()[-3000:]
    assert out.strip().endswith("done"), out

    db = tmp_path / "results.db"
    assert rows(db, FINISHED_NOT_ONCE) == []
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT variant) FROM tasksets") == [(SETS, SETS)]
    assert rows(db, "SELECT DISTINCT state FROM tasksets") == [("finished",)]
    assert rows(db, "SELECT COUNT(*) FROM runs WHERE state = 'running'") == [(0,)]
    per_set = rows(db, "SELECT variant, COUNT(*) FROM results GROUP BY variant ORDER BY variant")
    assert per_set == [(i, 2) for i in range(SETS)]  # two jobs of one finished run each
    # the set killed twice in the window: its third run is the one kept, with its events only
    (tries,) = rows(db, f"SELECT tries FROM tasksets WHERE variant = {CRASH_AT}")
    assert tries[0] >= 3
    kept = rows(
        db,
        "SELECT r.attempt, COUNT(DISTINCT e.id) FROM runs r JOIN tasksets t ON t.id = r.taskset_id "
        f"LEFT JOIN events e ON e.run_id = r.id WHERE t.variant = {CRASH_AT} "
        "AND r.state = 'finished' GROUP BY r.id",
    )
    assert len(kept) == 1 and kept[0][0] == tries[0] and kept[0][1] >= 3, kept

    with (tmp_path / "events.csv").open(newline="") as f:
        finished: dict[int, list[str]] = defaultdict(list)
        for row in csv.DictReader(f):
            if row["type"] == "FINISHED":
                finished[int(row["variant"])].append(row["detail"])
    assert sorted(finished) == list(range(SETS))
    assert finished[CRASH_AT] == ["", REPLACES_FINISH, REPLACES_FINISH]
    for details in finished.values():  # a set's later FINISHED rows are all marked
        assert all(d == REPLACES_FINISH for d in details[1:]), finished
    assert "re-run" in (tmp_path / "monitor.log").read_text()
    warned = [
        line.split(": sets ")[1].split(" finished")[0].split(", ")
        for line in (tmp_path / "log" / "distributor.log").read_text().splitlines()
        if "were not settled" in line
    ]
    assert len(warned) == 2 and all(str(CRASH_AT) in sets for sets in warned), warned

    journal = tmp_path / "state" / "journal.db"
    assert rows(journal, "SELECT COUNT(*), MIN(state) FROM jobs") == [(1, "finished")]
    assert rows(journal, "SELECT state, COUNT(*) FROM variants GROUP BY state") == [
        ("finished", SETS)
    ]
    assert wait_agents_gone(tmp_path) == []
