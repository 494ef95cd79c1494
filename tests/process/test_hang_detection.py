"""A stopped (SIGSTOP) agent is a hung guest: found by its process state, not the heartbeat."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import psutil

from farm import Distributor
from farm.config import FarmConfig
from farm.monitors import FINISHED_NOT_ONCE, SqliteMonitor
from farm.taskset import Task, TaskSet
from tests.helpers import wait_for


def _config(tmp_path: Path, **kw: object) -> FarmConfig:
    values: dict[str, object] = {
        "backend": "local",
        "state_dir": tmp_path / "state",
        "log_dir": tmp_path / "log",
        "log_file": True,
        "heartbeat_timeout": 30.0,  # so only the process state can find the hang in time
        "idle_linger": 0.2,
        "boot_timeout": 60.0,
        "set_tries": 5,
    }
    values.update(kw)
    return FarmConfig(**values)  # type: ignore[arg-type]


def test_stopped_agent_running_a_set_is_replaced_and_the_set_finishes_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "results.db"
    dist = Distributor(_config(tmp_path))
    frozen: list[psutil.Process] = []
    try:
        sets = TaskSet([Task({"pkg": "hey", "period": 300, "numberofjobs": 10, "x-run": range(2)})])
        job = dist.add_job(sets, SqliteMonitor(db))
        wait_for("a running set", lambda: any(m["state"] == "running" for m in dist.machines()))
        slot = next(s for s in dist._pool.slots.values() if s.state == "running")
        guest = slot.guest
        assert guest is not None and guest.pid is not None
        agent = psutil.Process(guest.pid)
        agent.send_signal(signal.SIGSTOP)
        frozen.append(agent)
        assert dist.wait_finished(timeout=120), dist.jobs()
        assert job.finished == 2 and job.bad == 0
    finally:
        dist.close()
        for proc in frozen:  # destroy() killed it; make sure
            if proc.is_running():
                proc.kill()
    with sqlite3.connect(db) as con:
        assert con.execute(FINISHED_NOT_ONCE).fetchall() == []
    text = (tmp_path / "log" / "distributor.log").read_text()
    assert "died or is stopped" in text
    assert "silent for" not in text  # not the (30 s) heartbeat


def test_stopped_booting_agent_frees_its_boot_and_the_farm_goes_on(tmp_path: Path) -> None:
    dist = Distributor(_config(tmp_path, max_concurrent_boots=1))
    frozen: list[psutil.Process] = []
    try:
        dist.add_job(TaskSet([Task({"pkg": "hey", "numberofjobs": 1, "x-run": range(3)})]))
        deadline = time.monotonic() + 30
        while not frozen and time.monotonic() < deadline:  # catch a guest while it boots
            for slot in list(dist._pool.slots.values()):
                guest = slot.guest
                if slot.state == "booting" and guest is not None and guest.pid is not None:
                    proc = psutil.Process(guest.pid)
                    proc.send_signal(signal.SIGSTOP)
                    frozen.append(proc)
                    break
            time.sleep(0.002)
        assert frozen, "no guest was seen booting"
        assert dist.wait_finished(timeout=120), dist.jobs()
    finally:
        dist.close()
        for proc in frozen:
            if proc.is_running():
                proc.kill()
    text = (tmp_path / "log" / "distributor.log").read_text()
    # found by its process state while booting (or, had it just come up, at its set's start)
    assert "booting guest hung" in text or "died or is stopped" in text
