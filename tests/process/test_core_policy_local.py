"""The failure policy on real agent processes (local backend): a bad set never costs its guest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm import Distributor
from farm.taskset import Task, TaskSet

from .test_distributor_local import agent_children, config

pytestmark = pytest.mark.process


class Recorder:
    """Monitor hooks, by variant index."""

    def __init__(self) -> None:
        self.finished: list[int] = []
        self.stopped: list[int] = []
        self.bad: list[tuple[int, int]] = []

    def __taskset_finish__(self, taskset: Any) -> None:
        self.finished.append(taskset.index)

    def __taskset_stop__(self, taskset: Any) -> None:
        self.stopped.append(taskset.index)

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        self.bad.append((taskset.index, tries))


class FixedSets:
    def __init__(self, variants: list[TaskSet]) -> None:
        self._variants = variants

    def variants(self) -> Iterator[TaskSet]:
        return iter(self._variants)


def test_unreadable_binary_fails_once_and_the_guest_stays_up(tmp_path: Path) -> None:
    sets = TaskSet([Task({"pkg": "hey", "period": 20, "numberofjobs": 2, "x-run": range(3)})])
    variants = list(sets.variants())
    missing = tmp_path / "gone.elf"
    variants[1].binaries = lambda: {"prog": missing}  # type: ignore[method-assign]
    dist = Distributor(config(tmp_path, idle_linger=30.0, set_tries=3))
    mon = Recorder()
    try:
        dist.add_job(FixedSets(variants), mon)
        assert dist.wait_finished(timeout=60)
        [machine] = dist.machines()
        assert machine["restarts"] == 0
        assert machine["sets_done"] == 2
        assert len(agent_children()) == 1  # the first agent served every set
    finally:
        dist.close()
    assert mon.bad == [(1, 1)]
    assert mon.stopped == [1]
    assert sorted(mon.finished) == [0, 2]
    assert agent_children() == []


def test_stop_returns_with_the_set_stopped_and_the_agent_up(tmp_path: Path) -> None:
    """After the agent's EXIT_EXTERNAL no JOBS_DONE follows: stop() must not wait for one."""
    import threading
    import time

    long = {"pkg": "hey", "period": 1000, "numberofjobs": 1000, "x-run": range(2)}
    dist = Distributor(config(tmp_path, idle_linger=30.0))
    mon = Recorder()
    try:
        dist.add_job(TaskSet([Task(long)]), mon)
        deadline = time.monotonic() + 60
        while not any(m["current"] for m in dist.machines()) and time.monotonic() < deadline:
            time.sleep(0.05)
        stopper = threading.Thread(target=dist.stop, kwargs={"wait": True}, daemon=True)
        stopper.start()
        stopper.join(60)  # a deadlock guard, not a timing assertion
        assert not stopper.is_alive(), "stop(wait=True) hangs"
        assert mon.stopped == [0] and mon.finished == [] and mon.bad == []
        assert [m["state"] for m in dist.machines()] == ["idle"]
        assert len(agent_children()) == 1  # machines stay up
    finally:
        dist.close()
    assert agent_children() == []
