"""Job spawning off the scheduler thread (farm/agent/spawner.py): releases never wait on
another task's spawn, and a SCHED_FIFO job inherits its policy from its launcher thread."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm.agent import pspawn, sched, spawner
from farm.agent.jobs import Launch
from farm.agent.runner import Runner
from farm.agent.taskspec import TaskSpec

pytestmark = pytest.mark.unit

Events = list[dict[str, Any]]


def _runner(
    tmp_path: Path, tasks: list[TaskSpec], launcher: Any, events: Events, lock: threading.Lock
) -> Runner:
    def emit(event: dict[str, Any]) -> None:
        with lock:
            events.append(event)

    return Runner(tasks, launcher, emit)


def test_a_slow_spawn_does_not_hold_back_another_tasks_release(tmp_path: Path) -> None:
    """Task 0's spawn blocks until task 1 has started: task 1 (released later) must START
    while task 0's spawn is still in progress, with its own planned release time."""
    events: Events = []
    lock = threading.Lock()
    b_started = threading.Event()
    a_blocked_until_b = threading.Event()

    def launcher(task: TaskSpec, index: int, plan: sched.SchedPlan) -> Launch:
        # a deliberately slow spawn of task 0 in its launcher: it ends only after task 1
        # started (not in the start request's thread: that one only pre-spawns gated jobs 0,
        # before t0)
        in_launcher = threading.current_thread() is not threading.main_thread()
        if task.id == 0 and in_launcher and b_started.wait(20):
            a_blocked_until_b.set()
        return Launch(["/bin/true"], {"PATH": "/usr/bin:/bin"}, str(tmp_path), False, sched=plan)

    def emit(event: dict[str, Any]) -> None:
        with lock:
            events.append(event)
        if event["type"] == "START" and event["task_id"] == 1:
            b_started.set()

    tasks = [TaskSpec(0, "shell", numberofjobs=1), TaskSpec(1, "shell", offset=20, numberofjobs=1)]
    runner = Runner(tasks, launcher, emit)
    runner.start()
    try:
        assert runner.wait(30), "runner did not finish"
    finally:
        runner.stop()
    assert a_blocked_until_b.is_set(), "task 1 did not start while task 0 was being spawned"
    starts = [e for e in events if e["type"] == "START"]
    assert [e["task_id"] for e in starts] == [1, 0]  # B's START came first: it did not wait
    assert starts[0]["release"] == pytest.approx(runner.t0 + 0.020)
    assert starts[1]["release"] == pytest.approx(runner.t0)
    ends = {(e["task_id"], e["type"]) for e in events if e["job"] is not None}
    assert ends >= {(0, "EXIT"), (1, "EXIT")}
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts)  # one emitting thread: timestamps never decrease


def test_a_stop_while_a_spawn_is_in_flight_kills_the_job_it_started(tmp_path: Path) -> None:
    """stop() during a spawn: the job still gets START, then EXIT_EXTERNAL; none leaks."""
    events: Events = []
    lock = threading.Lock()
    in_spawn, release_spawn = threading.Event(), threading.Event()

    def launcher(task: TaskSpec, index: int, plan: sched.SchedPlan) -> Launch:
        if threading.current_thread() is not threading.main_thread():  # (see above)
            in_spawn.set()
            release_spawn.wait(20)
        return Launch(["/bin/sleep", "30"], {"PATH": "/usr/bin:/bin"}, str(tmp_path), False)

    runner = _runner(tmp_path, [TaskSpec(0, "shell", numberofjobs=1)], launcher, events, lock)
    runner.start()
    try:
        assert in_spawn.wait(20)
        stopper = threading.Thread(target=runner.stop)
        stopper.start()
        release_spawn.set()
        stopper.join(30)
        assert runner.wait(30)
    finally:
        release_spawn.set()
        runner.stop()
    assert [e["type"] for e in events] == ["START", "EXIT_EXTERNAL"]


def _stat_policy(text: str) -> tuple[int, int]:
    """(rt_priority, policy) from a /proc/PID/stat line."""
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[37]), int(fields[38])


def _host_allows_fifo() -> bool:
    done = subprocess.run(["chrt", "-f", "7", "true"], capture_output=True, timeout=10)
    return done.returncode == 0


def test_a_fifo_job_runs_under_its_policy_from_its_first_instruction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's first act (cat reading its own /proc/self/stat) already sees SCHED_FIFO 7,
    set by posix_spawn before the exec: no fork of the agent, no preexec_fn."""
    popen_calls: list[object] = []
    real = subprocess.Popen

    def spy(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        if kwargs.get("cwd") == str(tmp_path):  # a job (not the guard's launcher)
            popen_calls.append(kwargs.get("preexec_fn"))
        return real(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    events: Events = []
    lock = threading.Lock()

    def launcher(task: TaskSpec, index: int, plan: sched.SchedPlan) -> Launch:
        argv = ["/bin/cat", "/proc/self/stat"]
        return Launch(argv, {"PATH": "/usr/bin:/bin"}, str(tmp_path), False, sched=plan)

    runner = _runner(
        tmp_path, [TaskSpec(0, "shell", priority=7, numberofjobs=1)], launcher, events, lock
    )
    runner.start()
    try:
        assert runner.wait(30)
    finally:
        runner.stop()
    (start,) = [e for e in events if e["type"] == "START"]
    (end,) = [e for e in events if e["type"] == "EXIT"]
    notices = [e for e in events if e["type"] == "NOTICE"]
    assert pspawn.available(), "glibc's posix_spawn with addchdir_np is expected here"
    assert popen_calls == []
    if _host_allows_fifo():
        assert notices == [] and start["sched"] == "fifo:7"
        assert _stat_policy(end["output"]) == (7, os.SCHED_FIFO)
    else:
        assert len(notices) == 1 and "best effort" in notices[0]["detail"]
        assert start["sched"] == "other"
        assert _stat_policy(end["output"]) == (0, os.SCHED_OTHER)


def test_the_launcher_thread_reports_an_unexpected_error_as_a_failed_spawn() -> None:
    results: list[spawner.Spawned] = []
    got = threading.Event()

    def done(result: spawner.Spawned) -> None:
        results.append(result)
        got.set()

    def boom() -> Any:
        raise RuntimeError("broken launcher")

    launcher = spawner.TaskLauncher("t", sched.SchedPlan(), done)
    launcher.start()
    launcher.submit(3, 5, time.monotonic(), boom)
    assert got.wait(10)
    launcher.close()
    (result,) = results
    assert (result.pos, result.index, result.job) == (3, 5, None)
    assert isinstance(result.error, RuntimeError)


@pytest.mark.parametrize("priority", [0, 7])
def test_the_scheduler_thread_runs_above_real_time_jobs(tmp_path: Path, priority: int) -> None:
    """With a real-time task the scheduler thread (which calls emit) runs SCHED_FIFO at the top
    priority, reset-on-fork; a set of best-effort tasks leaves it alone."""
    seen: list[tuple[int, int]] = []

    def emit(event: dict[str, Any]) -> None:  # called in the scheduler thread
        seen.append((os.sched_getscheduler(0), os.sched_getparam(0).sched_priority))

    def launcher(task: TaskSpec, index: int, plan: sched.SchedPlan) -> Launch:
        return Launch(["/bin/true"], {"PATH": "/usr/bin:/bin"}, str(tmp_path), False, sched=plan)

    runner = Runner([TaskSpec(0, "shell", priority=priority, numberofjobs=1)], launcher, emit)
    runner.start()
    try:
        assert runner.wait(30)
    finally:
        runner.stop()
    policy, prio = seen[0]
    if priority and _host_allows_fifo():
        top = os.sched_get_priority_max(os.SCHED_FIFO)
        assert (policy, prio) == (os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, top)
    else:
        assert (policy, prio) == (os.SCHED_OTHER, 0)
