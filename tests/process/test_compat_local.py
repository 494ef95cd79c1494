"""farm.compat on real agent processes (local backend): taskgen's stop(wait=True), MaLSAMi jobs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm.compat.malsami.distributorClass import Distributor as MalsamiDistributor
from farm.compat.taskgen.distributor import Distributor as TaskgenDistributor
from farm.compat.taskgen.task import Task
from farm.compat.taskgen.taskset import TaskSet
from farm.config import FarmConfig
from tests.data.compat import malsami_test
from tests.helpers import wait_for

pytestmark = pytest.mark.process


def _config(tmp_path: Path) -> FarmConfig:
    return FarmConfig(
        backend="local",
        state_dir=tmp_path / "state",
        log_dir=tmp_path / "log",
        heartbeat=0.2,
        heartbeat_timeout=3.0,
        idle_linger=60.0,
        boot_timeout=30.0,
    )


class Monitor:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[Any] = []
        self.stopped: list[Any] = []
        self.finished: list[Any] = []

    def __taskset_start__(self, taskset: Any) -> None:
        with self.lock:
            self.started.append(taskset)

    def __taskset_event__(self, taskset: Any) -> None:  # one argument, as MaLSAMi called it
        pass

    def __taskset_finish__(self, taskset: Any) -> None:
        with self.lock:
            self.finished.append(taskset)

    def __taskset_stop__(self, taskset: Any) -> None:
        with self.lock:
            self.stopped.append(taskset)


def test_taskgen_stop_wait_on_local_agents(tmp_path: Path) -> None:
    long = TaskSet()
    long.append(Task({"pkg": "idle", "config": {"arg1": 20000}, "numberofjobs": 1}))
    dist = TaskgenDistributor(config=_config(tmp_path))
    mon = Monitor()
    dist.event_handler = mon
    try:
        dist.start(long, wait=False)
        wait_for("the set to start", lambda: bool(mon.started), timeout=60)
        time.sleep(0.5)
        t0 = time.monotonic()
        dist.stop(wait=True)
        assert time.monotonic() - t0 < 5
        wait_for("stop reported", lambda: len(mon.stopped) == 1, timeout=5)
        assert not mon.finished
        assert dist.farm.machines(), "the machine stays up after stop()"
    finally:
        dist.close()
        assert dist.wait_closed(30)


def test_malsami_task_jobs_from_local_agents(tmp_path: Path) -> None:
    taskset = malsami_test.exampleTest()
    for task in taskset:
        task["period"] = 50 if task["pkg"] == "hey" else 0  # the original's 5 s: too slow here
    dist = MalsamiDistributor(config=_config(tmp_path))
    mon = Monitor()
    try:
        dist.add_job([taskset], mon)
        wait_for("the set to finish", lambda: bool(mon.finished), timeout=120)
    finally:
        dist.close()
    done = mon.finished[0]
    assert done is taskset
    hey = next(iter(done))
    assert sorted(hey["jobs"], key=int) == ["1", "2", "3", "4", "5"]
    for task in done:
        for start, end, kind in task["jobs"].values():
            assert end >= start and kind.startswith(("EXIT", "OUT_OF"))
