"""A finished job's monitor thread (and the monitor's open files) is released, not kept.

A farm fed many jobs, each with a monitor of its own (``add_job(ts,
SqliteMonitor(path))``), must not keep one thread and the monitor's files per
finished job until close(): a 30-minute campaign would run out of threads/fds.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from farm import Distributor
from farm.config import FarmConfig
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet


def test_monitor_of_a_finished_job_is_released(tmp_path: Path) -> None:
    cfg = FarmConfig(backend="local", state_dir=tmp_path / "state", log_dir=tmp_path / "log",
                     heartbeat=0.2, heartbeat_timeout=2.0, idle_linger=30.0)  # fmt: skip
    me = psutil.Process()
    dist = Distributor(cfg)
    counts = []
    try:
        for n in range(8):
            ts = TaskSet([Task({"pkg": "hey", "numberofjobs": 1, "x-run": range(2)})])
            dist.add_job(ts, SqliteMonitor(tmp_path / "results.db"), name=f"job{n}")
            assert dist.wait_finished(timeout=60)
            time.sleep(0.2)  # a released monitor thread ends right after its last hook
            counts.append((me.num_threads(), me.num_fds()))
    finally:
        dist.close()
    # after the first job (agents booted), 7 more jobs add no thread and no fd
    assert counts[-1][0] <= counts[0][0] + 1, counts
    assert counts[-1][1] <= counts[0][1] + 2, counts
