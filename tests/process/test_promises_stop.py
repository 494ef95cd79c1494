"""Distributor.stop() on real agent processes (local backend), taskgen's documented API.

``stop(wait=True)`` must return promptly with the running set stopped on its target and
reported stopped (``__taskset_stop__``), queued jobs cancelled, and the machines still up
and idle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from farm import Distributor
from farm.config import FarmConfig
from farm.monitors.base import AbstractMonitor
from farm.taskset import Task, TaskSet

pytestmark = pytest.mark.process


class Recorder(AbstractMonitor):
    """Hook calls as (hook, variant index), in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.events: list[Any] = []
        self._lock = threading.Lock()

    def __taskset_start__(self, taskset: Any) -> None:
        with self._lock:
            self.calls.append(("start", taskset.index))

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def __taskset_finish__(self, taskset: Any) -> None:
        with self._lock:
            self.calls.append(("finish", taskset.index))

    def __taskset_stop__(self, taskset: Any) -> None:
        with self._lock:
            self.calls.append(("stop", taskset.index))

    def of(self, hook: str) -> list[int]:
        with self._lock:
            return [i for h, i in self.calls if h == hook]


def until(cond: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def local_farm(tmp_path: Path) -> Distributor:
    config = FarmConfig(
        backend="local",
        state_dir=tmp_path / "state",
        log_dir=tmp_path / "log",
        heartbeat=0.2,
        heartbeat_timeout=3.0,
        idle_linger=60.0,
        boot_timeout=30.0,
    )
    return Distributor(config)


def long_sets(n: int) -> TaskSet:
    """``n`` variants of a set that runs ~20 s, its one job running all along (a stop kills it)."""
    return TaskSet(
        [Task({"pkg": "idle", "config": {"ms": 20000}, "numberofjobs": 1, "x-run": range(n)})]
    )


@pytest.mark.timeout(60)
def test_stop_returns_promptly_on_agent_processes(tmp_path: Path) -> None:
    dist = local_farm(tmp_path)
    mon = Recorder()
    try:
        dist.add_job(long_sets(2), mon)
        dist.add_job(long_sets(1), mon, name="queued")
        assert until(lambda: mon.of("start") == [0] and len(mon.events) > 0)
        done = threading.Event()
        stopper = threading.Thread(target=lambda: (dist.stop(wait=True), done.set()), daemon=True)
        stopper.start()
        assert done.wait(5), "stop(wait=True) did not return within 5 s"
        assert mon.of("stop") == [0] and mon.of("finish") == []
        assert any(str(e.type) == "EXIT_EXTERNAL" for e in mon.events)
        machines = dist.machines()
        assert machines and all(m["current"] is None for m in machines)
        assert all(j["done"] for j in dist.jobs())
        time.sleep(0.5)
        assert mon.of("start") == [0]  # nothing else was started
    finally:
        dist.close()


@pytest.mark.timeout(60)
def test_stop_without_wait_cancels_the_queue_on_agent_processes(tmp_path: Path) -> None:
    """stop(wait=False) returns at once; the queued job is cancelled and never starts."""
    dist = local_farm(tmp_path)
    mon = Recorder()
    try:
        dist.add_job(long_sets(2), mon)
        dist.add_job(long_sets(1), mon, name="queued")
        assert until(lambda: mon.of("start") == [0] and len(mon.events) > 0)
        dist.stop(wait=False)
        assert until(lambda: [j["done"] for j in dist.jobs() if j["key"] == "queued"] == [True], 5)
        assert any(str(e.type) == "EXIT_EXTERNAL" for e in mon.events) or until(
            lambda: any(str(e.type) == "EXIT_EXTERNAL" for e in mon.events), 5
        )
        time.sleep(0.5)
        assert mon.of("start") == [0]
    finally:
        dist.close()
