"""The agent's pool of helper threads (farm/agent/workers.py): launchers and waiters are
reused, so a set creates no thread once the pool has grown to the agent's concurrency."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm.agent import sched, workers
from farm.agent.jobs import Launch
from farm.agent.runner import Runner
from farm.agent.taskspec import TaskSpec

pytestmark = pytest.mark.unit


def _run_set(tmp_path: Path) -> list[str]:
    events: list[str] = []

    def launcher(task: TaskSpec, index: int, plan: sched.SchedPlan) -> Launch:
        return Launch(["/bin/true"], {"PATH": "/usr/bin:/bin"}, str(tmp_path), False, sched=plan)

    tasks = [TaskSpec(0, "shell", numberofjobs=2), TaskSpec(1, "shell", numberofjobs=2)]
    runner = Runner(tasks, launcher, lambda e: events.append(e["type"]))
    runner.start()
    try:
        assert runner.wait(30)
    finally:
        runner.stop()
    return events


def _all_idle(timeout: float = 30.0) -> int:
    """Wait until every pool thread idles (a set's threads finish just after it); their count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        threads, idle = workers.counts()
        if threads == idle:
            return threads
        time.sleep(0.01)
    raise AssertionError(f"pool threads still busy: {workers.counts()}")


def test_sets_reuse_the_pool_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads are only created while none idles: five sets of two tasks (a scheduler, two
    launchers, at most two waiters per task at once) leave at most seven pool threads."""
    start = _all_idle()
    for _ in range(5):
        assert _run_set(tmp_path).count("EXIT") == 4
        assert _all_idle() <= max(start, 7)


def test_a_failing_work_item_leaves_its_thread_in_the_pool() -> None:
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("work that fails")

    workers.run(boom)
    workers.run(done.set)
    assert done.wait(10)
    results: list[Any] = []
    again = threading.Event()
    workers.run(lambda: (results.append(threading.get_ident()), again.set()))
    assert again.wait(10) and results


def test_no_thread_works_for_a_single_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Job exits are watched through pidfds in the scheduler's selector: a set of one task
    asks the pool for its scheduler and its launcher only, however many jobs it runs."""
    asked: list[str] = []
    real_run = workers.run

    def run(fn: Any, rt: bool = False) -> None:
        asked.append(getattr(fn, "__qualname__", repr(fn)))
        real_run(fn, rt)

    monkeypatch.setattr(workers, "run", run)
    events: list[dict[str, Any]] = []

    def launcher(task: TaskSpec, index: int, plan: sched.SchedPlan) -> Launch:
        return Launch(["/bin/true"], {"PATH": "/usr/bin:/bin"}, str(tmp_path), False, sched=plan)

    runner = Runner([TaskSpec(0, "shell", numberofjobs=5)], launcher, events.append)
    runner.start()
    try:
        assert runner.wait(30)
    finally:
        runner.stop()
    assert [e["type"] for e in events].count("EXIT") == 5
    assert sorted(asked) == ["Runner._run", "TaskLauncher._run"], asked
