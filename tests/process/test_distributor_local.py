"""Distributor on real agent processes (local backend): flow, chaos, resume, no strays."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from farm import Distributor
from farm.config import FarmConfig
from farm.monitors import FINISHED_NOT_ONCE, LoggingMonitor, SqliteMonitor
from farm.taskset import Task, TaskSet
from farm.tasksets.example import Hey0TaskSet

ROOT = Path(__file__).resolve().parents[2]


def agent_children() -> list[psutil.Process]:
    """farm agent processes started by this test process."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "farm.agent" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def config(tmp_path: Path, **kw: object) -> FarmConfig:
    base: dict[str, object] = {
        "backend": "local",
        "state_dir": tmp_path / "state",
        "log_dir": tmp_path / "log",
        "heartbeat": 0.2,
        "heartbeat_timeout": 2.0,
        "idle_linger": 0.2,
        "boot_timeout": 30.0,
    }
    base.update(kw)
    return FarmConfig(**base)  # type: ignore[arg-type]


def short_sets(n: int) -> TaskSet:
    return TaskSet([Task({"pkg": "hey", "period": 20, "numberofjobs": 3, "x-run": range(n)})])


def test_seed004_flow_on_agent_processes(tmp_path: Path) -> None:
    dist = Distributor(config(tmp_path, log_file=True))  # pytest set up logging: force the file
    log = tmp_path / "monitor.log"
    try:
        dist.add_job(Hey0TaskSet(), LoggingMonitor(log))
        dist.set_max_machine_value(3)
        assert dist.wait_finished(timeout=60)
        deadline = time.monotonic() + 20
        while dist.get_distributor_state() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not dist.get_distributor_state()
    finally:
        dist.close()
    text = log.read_text()
    assert "finish" in text.lower()
    assert "spawning guest" in (tmp_path / "log" / "distributor.log").read_text()
    assert agent_children() == []


def test_chaos_every_set_finished_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    dist = Distributor(config(tmp_path, set_tries=20))
    stop = threading.Event()
    kills = []
    rng = random.Random(3)

    def chaos() -> None:
        # the first kill soon (native built-ins finish 30 sets in well under a second)
        while not stop.wait(0.7 if kills else 0.1):
            victims = agent_children()
            if victims:
                victim = rng.choice(victims)
                kills.append(victim.pid)
                try:
                    victim.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass

    thread = threading.Thread(target=chaos)
    try:
        dist.set_max_machine_value(3)
        job = dist.add_job(short_sets(30), SqliteMonitor(db))
        thread.start()
        assert dist.wait_finished(timeout=240), dist.jobs()
    finally:
        stop.set()
        thread.join()
        dist.close()
    with sqlite3.connect(db) as con:
        assert con.execute(FINISHED_NOT_ONCE).fetchall() == []
        finished = con.execute("SELECT COUNT(*) FROM tasksets WHERE state='finished'").fetchone()[0]
        stopped_runs = con.execute("SELECT COUNT(*) FROM runs WHERE state='stopped'").fetchone()[0]
    assert finished == 30
    assert kills, "chaos never killed anything"
    assert job.stopped == stopped_runs
    assert agent_children() == []


SCRIPT = textwrap.dedent(
    """
    import sys, time
    from farm.config import FarmConfig
    from farm import Distributor
    from farm.monitors import SqliteMonitor
    from farm.taskset import Task, TaskSet

    tmp = sys.argv[1]
    cfg = FarmConfig(backend="local", state_dir=tmp + "/state", log_dir=tmp + "/log",
                     heartbeat=0.2, heartbeat_timeout=2.0, idle_linger=0.2)
    dist = Distributor(cfg)
    dist.set_max_machine_value(2)
    ts = TaskSet([Task({"pkg": "idle", "config": {"ms": 50}, "numberofjobs": 2,
                        "x-run": range(24)})])
    job = dist.add_job(ts, SqliteMonitor(tmp + "/results.db"))
    print("skipped", job.skipped, flush=True)
    dist.wait_finished()
    dist.close()
    print("done", flush=True)
    """
)


def test_resume_after_sigkill_finishes_each_variant_once(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    db = tmp_path / "results.db"
    deadline = time.monotonic() + 120
    finished = 0
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if db.exists():
            with sqlite3.connect(db) as con:
                try:
                    finished = con.execute(
                        "SELECT COUNT(*) FROM tasksets WHERE state='finished'"
                    ).fetchone()[0]
                except sqlite3.OperationalError:
                    continue
            if finished >= 6:
                break
    assert first.poll() is None, "first run ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert 6 <= finished < 24
    # the dead farm's agents are reaped by its watchdog (or by the next farm)
    second = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    skipped = int(second.stdout.split("skipped")[1].split()[0])
    assert skipped >= finished
    with sqlite3.connect(db) as con:
        assert con.execute(FINISHED_NOT_ONCE).fetchall() == []
        total = con.execute("SELECT COUNT(*) FROM tasksets WHERE state='finished'").fetchone()[0]
    assert total == 24
    strays = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"]
        and str(tmp_path) in " ".join(p.info["cmdline"])
        and "farm.agent" in " ".join(p.info["cmdline"])
    ]
    assert strays == []


@pytest.mark.parametrize("n", [1])
def test_close_leaves_no_agent_processes(tmp_path: Path, n: int) -> None:
    dist = Distributor(config(tmp_path))
    dist.set_max_machine_value(2)
    dist.add_job(TaskSet([Task({"pkg": "idle", "config": {"ms": 5000}})]), None)
    deadline = time.monotonic() + 30
    while not any(m["state"] == "running" for m in dist.machines()) and time.monotonic() < deadline:
        time.sleep(0.05)
    dist.close()
    assert agent_children() == []
