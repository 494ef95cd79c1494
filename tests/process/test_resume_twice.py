"""The distributor process SIGKILLed twice in one job and resumed: every variant once.

A job of short sets runs on real agent processes (local backend) in a child
process. It is SIGKILLed early (a few sets finished, others running), started
again with ``Distributor.resume()``, SIGKILLed again later (most sets done),
and resumed a last time to the end. Across the three runs every variant is
finished exactly once in the results store (SqliteMonitor) and in the job
journal, and no agent process of any run is left. ``--full`` / ``FARM_FULL=1``
runs a longer job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from farm.monitors import FINISHED_NOT_ONCE
from tests.helpers import farm_agents

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    from farm.config import FarmConfig
    from farm import Distributor
    from farm.monitors import SqliteMonitor
    from farm.taskset import Task, TaskSet

    tmp, mode, sets = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = FarmConfig(backend="local", state_dir=tmp + "/state", log_dir=tmp + "/log",
                     heartbeat=0.2, heartbeat_timeout=2.0, idle_linger=0.2)
    dist = Distributor(cfg)
    dist.set_max_machine_value(3)
    monitor = SqliteMonitor(tmp + "/results.db")
    if mode == "first":
        ts = TaskSet([Task({"pkg": "idle", "config": {"ms": 150}, "numberofjobs": 2,
                            "x-run": range(sets)})])
        jobs = [dist.add_job(ts, monitor)]
    else:
        jobs = dist.resume(monitor)
    print("resumed", len(jobs), "skipped", sum(j.skipped for j in jobs), flush=True)
    ok = dist.wait_finished(timeout=600)
    dist.close()
    print("done" if ok else "timed out", flush=True)
    """
)


def finished_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=5)) as con:
            return int(
                con.execute("SELECT COUNT(*) FROM tasksets WHERE state='finished'").fetchone()[0]
            )
    except sqlite3.OperationalError:
        return 0


def start(tmp: Path, mode: str, sets: int, n: int) -> subprocess.Popen[str]:
    script = tmp / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp / f"run{n}.stderr").open("w") as err:
        return subprocess.Popen(
            [sys.executable, str(script), str(tmp), mode, str(sets)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def kill_when(proc: subprocess.Popen[str], tmp: Path, at_least: int, timeout: float) -> int:
    """SIGKILL ``proc`` once ``at_least`` variants are finished (its agents running then)."""
    db = tmp / "results.db"
    deadline = time.monotonic() + timeout
    while finished_count(db) < at_least:
        assert proc.poll() is None, f"run ended before it could be killed (rc {proc.returncode})"
        assert time.monotonic() < deadline, f"{at_least} variants not finished in {timeout}s"
        time.sleep(0.05)
    assert farm_agents(tmp), "no agent process running at the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return finished_count(db)


def wait_agents_gone(tmp: Path, timeout: float = 30.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    left = farm_agents(tmp)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = farm_agents(tmp)
    return left


@pytest.mark.timeout(600)
def test_killed_twice_and_resumed_each_variant_finished_once(
    tmp_path: Path, full_size: bool
) -> None:
    sets = 120 if full_size else 40
    db = tmp_path / "results.db"
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(start(tmp_path, "first", sets, 1))
        first = kill_when(procs[-1], tmp_path, sets // 8, timeout=180)
        # the dead farm's watchdog ends its agents
        assert wait_agents_gone(tmp_path) == [], "agents of the killed farm left running"

        procs.append(start(tmp_path, "resume", sets, 2))
        second = kill_when(procs[-1], tmp_path, (sets * 5) // 8, timeout=300)
        assert wait_agents_gone(tmp_path) == [], "agents of the killed farm left running"

        procs.append(start(tmp_path, "resume", sets, 3))
        out, _ = procs[-1].communicate(timeout=400)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert procs[-1].returncode == 0, (tmp_path / "run3.stderr").read_text()[-3000:]
    assert out.strip().endswith("done"), out
    skipped = int(out.split("skipped")[1].split()[0])
    assert first < second < sets
    assert skipped >= second, (skipped, second)

    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute(FINISHED_NOT_ONCE).fetchall() == []
        rows = con.execute("SELECT COUNT(*), COUNT(DISTINCT variant) FROM tasksets").fetchone()
        assert rows == (sets, sets)
        assert finished_count(db) == sets
        assert con.execute("SELECT COUNT(*) FROM tasksets WHERE state='bad'").fetchone()[0] == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "journal.db")) as con:
        (job_rows,) = con.execute("SELECT COUNT(*) FROM jobs").fetchall()
        assert job_rows == (1,), "resume must continue the one job, not open new ones"
        states = con.execute("SELECT state, COUNT(*) FROM variants GROUP BY state").fetchall()
        assert states == [("finished", sets)]
        assert con.execute("SELECT state FROM jobs").fetchall() == [("finished",)]
    assert wait_agents_gone(tmp_path) == []
