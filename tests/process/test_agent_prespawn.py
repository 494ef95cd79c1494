"""Pre-spawned jobs (farm/agent/spawner.py): a native built-in job exists, policy and all,
before its release and waits on its gate; the release only lets it go. A stop drops it."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm.agent import commands, sched
from farm.agent.jobs import Launch
from farm.agent.runner import Runner
from farm.agent.taskspec import TaskSpec

pytestmark = pytest.mark.process

Events = list[dict[str, Any]]


def _gated_child(job: int) -> int | None:
    """pid of this process's child that waits as job ``job`` on its gate, or None."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] != me:
            continue
        if b"FARM_GATE=1" in environ and f"FARM_JOB={job}".encode() in environ:
            return int(entry.name)
    return None


def _wait_for_gated_child(job: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _gated_child(job)
        if pid is not None:
            return pid
        time.sleep(0.02)
    raise AssertionError(f"no pre-spawned process for job {job}")


def _policy(pid: int) -> tuple[int, int]:
    """(rt_priority, policy) of ``pid`` from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[37]), int(fields[38])


def _host_allows_fifo() -> bool:
    return subprocess.run(["chrt", "-f", "7", "true"], capture_output=True).returncode == 0


def _runner(tmp_path: Path, task: TaskSpec, events: Events, started: threading.Event) -> Runner:
    lock = threading.Lock()

    def launcher(spec: TaskSpec, index: int, plan: sched.SchedPlan) -> Launch:
        return commands.build_launch(spec, index, plan, {}, tmp_path)

    def emit(event: dict[str, Any]) -> None:
        with lock:
            events.append(event)
        if event["type"] == "START" and event["job"] == 0:
            started.set()

    return Runner([task], launcher, emit)


def test_the_next_job_waits_pre_spawned_under_its_policy_until_its_release(
    tmp_path: Path,
) -> None:
    """After job 0's START, job 1's process already exists (a child waiting on its gate,
    with the task's policy when the host allows SCHED_FIFO) and has no START yet; at its
    release that same process runs and reports as job 1."""
    assert commands.native_gate(), "the process tier's native farm-workload knows the gate"
    fifo = _host_allows_fifo()
    task = TaskSpec(0, "hey", priority=7 if fifo else 0, period=3000, numberofjobs=2)
    events: Events = []
    started = threading.Event()
    runner = _runner(tmp_path, task, events, started)
    runner.start()
    try:
        assert started.wait(30)
        pid = _wait_for_gated_child(1)
        assert not [e for e in events if e["job"] == 1], "job 1 went before its release"
        assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "S"
        if fifo:
            assert _policy(pid) == (7, os.SCHED_FIFO)
        assert runner.wait(60)
    finally:
        runner.stop()
    (start,) = [e for e in events if e["type"] == "START" and e["job"] == 1]
    (end,) = [e for e in events if e["type"] == "EXIT" and e["job"] == 1]
    assert start["pid"] == pid
    assert start["ts"] >= start["release"] == pytest.approx(runner.t0 + 3.0)
    assert end["output"] == "Hey! I am task 0 job 1.\n"


def test_a_stop_drops_the_pre_spawned_job_without_an_event(tmp_path: Path) -> None:
    """Stopped while job 1 waits on its gate: that process is killed and reaped, and no
    event mentions job 1 (it was never released)."""
    events: Events = []
    started = threading.Event()
    runner = _runner(tmp_path, TaskSpec(0, "hey", period=60000, numberofjobs=0), events, started)
    runner.start()
    try:
        assert started.wait(30)
        pid = _wait_for_gated_child(1)
    finally:
        assert runner.stop()
    assert _gated_child(1) is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert [e for e in events if e["job"] == 1] == []
    assert [e["type"] for e in events if e["job"] == 0] == ["START", "EXIT"]


def test_a_job_without_a_gate_is_spawned_at_its_release_with_that_release(
    tmp_path: Path,
) -> None:
    """A shell job cannot wait on a gate: built ahead, spawned at its release, and judged
    against that release (EXIT, not EXIT_CRITICAL against a placeholder)."""
    events: Events = []
    started = threading.Event()
    task = TaskSpec(0, "shell", {"command": "true"}, period=300, criticaltime=10000, numberofjobs=2)
    runner = _runner(tmp_path, task, events, started)
    runner.start()
    try:
        assert started.wait(30)
        assert _gated_child(1) is None
        assert runner.wait(60)
    finally:
        runner.stop()
    kinds = [(e["job"], e["type"]) for e in events if e["job"] is not None]
    assert kinds == [(0, "START"), (0, "EXIT"), (1, "START"), (1, "EXIT")]
    starts = [e for e in events if e["type"] == "START"]
    assert [e["release"] for e in starts] == pytest.approx([runner.t0, runner.t0 + 0.3])


def test_a_timed_sets_first_job_waits_pre_spawned_before_t0(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A periodic task's job 0 exists, waiting on its gate, once the runner is made (by the
    start request, before t0 and the scheduler): at t0 that process only gets its byte.
    A lone one-shot job is released at t0 and spawned then (no wait before it)."""
    commands.native_workload.cache_clear()  # this tier's farm-workload, not an earlier lookup
    caplog.set_level(logging.INFO)
    for _attempt in range(3):  # a pre-spawn is best effort (a failure waits for its release)
        events: Events = []
        started = threading.Event()
        task = TaskSpec(0, "hey", period=500, numberofjobs=1)
        runner = _runner(tmp_path, task, events, started)
        pid = _gated_child(0)
        if pid is not None:
            break
        runner.start()  # (a runner never started has nothing to end its stop)
        runner.stop()
    try:
        assert pid is not None, f"job 0 was not pre-spawned before t0: {caplog.text}"
        runner.start()
        assert runner.wait(60)
    finally:
        runner.stop()
    (start,) = [e for e in events if e["type"] == "START"]
    assert start["pid"] == pid and start["release"] == runner.t0

    events, started = [], threading.Event()
    runner = _runner(tmp_path, TaskSpec(0, "hey", numberofjobs=1), events, started)
    try:
        assert _gated_child(0) is None, "a lone one-shot job waited for its spawn before t0"
        runner.start()
        assert runner.wait(60)
    finally:
        runner.stop()
    assert [e["type"] for e in events] == ["START", "EXIT", "JOBS_DONE"]


def test_a_cyclictest_job_0_waits_pre_spawned_and_is_execd_at_its_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cyclictest pkg's job 0 is held at farm-workload's gate too (``--exec``): it exists
    before its release (offset 3 s) and at the release that same process becomes cyclictest
    (here a fake one on PATH, which prints its pid, whether it was gated, one summary line).
    Job 1 is spawned at its release: no pre-spawn while job 0 measures."""
    assert commands.exec_gate(), "the process tier's native farm-workload knows --exec"
    fake = tmp_path / "bin" / "cyclictest"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'echo "fake cyclictest $$ gate=${FARM_GATE:-none} $*"\n'
        'echo "T: 0 ( $$) P: 0 I:1000 C:      5 Min:      3 Act:    5 Avg:    4 Max:      20"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    config = {"loops": 5, "priority": 0}
    task = TaskSpec(0, "cyclictest", config=config, offset=3000, period=1000, numberofjobs=2)
    events: Events = []
    runner = _runner(tmp_path, task, events, threading.Event())
    runner.start()
    try:
        pid = _wait_for_gated_child(0)
        assert os.readlink(f"/proc/{pid}/exe") == os.path.realpath(commands.exec_gate() or "")
        assert not events, "job 0 went before its release"
        assert runner.wait(60)
    finally:
        runner.stop()
    starts = {e["job"]: e for e in events if e["type"] == "START"}
    ends = {e["job"]: e for e in events if e["type"] == "EXIT"}
    assert starts[0]["pid"] == pid
    assert starts[0]["ts"] >= starts[0]["release"] == pytest.approx(runner.t0 + 3.0)
    assert ends[0]["output"].startswith(f"fake cyclictest {pid} gate=1 -q -m -l 5 ")
    assert ends[0]["latency_us"]["max"] == 20
    assert ends[1]["output"].startswith(f"fake cyclictest {starts[1]['pid']} gate=none -q -m ")
