"""The failure policy (farm.core.policy) and the slot loop obeying it, on the fake backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.backend.base import Guest
from farm.backend.fake import FakeBackend, session_class_for
from farm.core.policy import Phase, Verdict, classify
from farm.errors import (
    AgentError,
    BackendError,
    BootError,
    ConfigError,
    ImageError,
    SessionError,
    SessionTimeout,
    TaskSetError,
)
from farm.session.base import read_binaries
from farm.taskset import TaskSet

from .test_distributor import RecordingMonitor, make, many

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("error", "phase", "verdict"),
    [
        (ConfigError("x"), Phase.BOOT, Verdict.GIVE_UP),
        (ImageError("x"), Phase.BOOT, Verdict.GIVE_UP),
        (BootError("x"), Phase.BOOT, Verdict.RETRY_BOOT),
        (BackendError("x"), Phase.BOOT, Verdict.RETRY_BOOT),
        (SessionError("x"), Phase.BOOT, Verdict.RETRY_BOOT),
        (OSError("x"), Phase.BOOT, Verdict.RETRY_BOOT),
        (ConfigError("binary 'p' unreadable"), Phase.RUN, Verdict.BAD_INPUT),
        (TaskSetError("x"), Phase.RUN, Verdict.BAD_INPUT),
        (AgentError("x", code="bad_request"), Phase.RUN, Verdict.BAD_INPUT),
        (AgentError("x", code="invalid_taskset"), Phase.RUN, Verdict.BAD_INPUT),
        (AgentError("x", code="busy"), Phase.RUN, Verdict.REPLACE_GUEST),
        (AgentError("x", code="internal"), Phase.RUN, Verdict.REPLACE_GUEST),
        (SessionError("x"), Phase.RUN, Verdict.REPLACE_GUEST),
        (SessionTimeout("x"), Phase.RUN, Verdict.REPLACE_GUEST),
        (BackendError("x"), Phase.RUN, Verdict.REPLACE_GUEST),
        (OSError("x"), Phase.RUN, Verdict.REPLACE_GUEST),
    ],
)
def test_classify(error: BaseException, phase: Phase, verdict: Verdict) -> None:
    assert classify(error, phase) is verdict


class FixedSets:
    """A task set whose variants are given (variant 1 may be made bad by the test)."""

    def __init__(self, variants: list[TaskSet]) -> None:
        self._variants = variants

    def variants(self) -> Iterator[TaskSet]:
        return iter(self._variants)

    def variant_count(self) -> int:
        return len(self._variants)


def with_missing_binary(tmp_path: Path) -> FixedSets:
    """Three variants; variant 1 names a binary that cannot be read."""
    variants = list(many(3).variants())
    missing = tmp_path / "gone.elf"
    variants[1].binaries = lambda: {"prog": missing}  # type: ignore[method-assign]
    return FixedSets(variants)


def reading_session(backend: FakeBackend, fail: BaseException | None = None) -> type:
    """A fake session that reads the binaries like FarmSession (and may fail set 1)."""

    class Reading(session_class_for(backend)):  # type: ignore[misc]
        def start(self, taskset: Any, *params: Any) -> None:
            read_binaries(taskset)
            if fail is not None and taskset.index == 1:
                raise fail
            super().start(taskset, *params)

    return Reading


def test_unreadable_binary_fails_once_and_the_guest_serves_the_next_set(tmp_path: Path) -> None:
    backend = FakeBackend()
    dist, _ = make(tmp_path, backend, reading_session(backend), set_tries=3)
    mon = RecordingMonitor()
    try:
        dist.add_job(with_missing_binary(tmp_path), mon)
        assert dist.wait_finished(timeout=30)
        [machine] = dist.machines() or [{"restarts": 0}]
        assert machine["restarts"] == 0
    finally:
        dist.close()
    assert mon.bad == [(1, 1)]  # given up at once, not after set_tries
    assert mon.stopped == [1]
    assert sorted(mon.finished) == [0, 2]
    assert backend.spawned == ["qemu1"]  # the same guest ran set 2: no respawn


@pytest.mark.parametrize(
    "error",
    [AgentError("no such pkg", code="invalid_taskset"), TaskSetError("task 0: bad period")],
)
def test_bad_input_reply_keeps_the_guest(tmp_path: Path, error: BaseException) -> None:
    backend = FakeBackend()
    dist, _ = make(tmp_path, backend, reading_session(backend, error), set_tries=3)
    mon = RecordingMonitor()
    try:
        dist.add_job(many(3), mon)
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert mon.bad == [(1, 1)]
    assert sorted(mon.finished) == [0, 2]
    assert backend.spawned == ["qemu1"]


def test_agent_busy_replaces_the_guest_and_retries(tmp_path: Path) -> None:
    backend = FakeBackend()
    error = AgentError("a task set is already running", code="busy")
    dist, _ = make(tmp_path, backend, reading_session(backend, error), set_tries=2)
    mon = RecordingMonitor()
    try:
        dist.add_job(many(3), mon)
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert mon.bad == [(1, 2)]
    assert mon.stopped == [1, 1]
    assert len(backend.spawned) == 3  # one guest, replaced after each of the two tries


class SpawnFails(FakeBackend):
    """Every spawn raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def spawn(self, name: str, token: str) -> Guest:
        with self._lock:
            self.spawned.append(name)
        raise self.error


@pytest.mark.parametrize("error", [ConfigError("no such kernel"), ImageError("image missing")])
def test_config_error_at_boot_gives_up_without_retries(tmp_path: Path, error: Exception) -> None:
    backend = SpawnFails(error)
    dist, _ = make(tmp_path, backend, boot_retries=5)
    try:
        dist.add_job(many(2), RecordingMonitor())
        assert dist.wait_finished(timeout=30) is False  # stalled: no slot can boot
        assert dist.stalled()
    finally:
        dist.close()
    assert backend.spawned == ["qemu1"]  # spawned once, never retried


def test_boot_error_is_retried_up_to_boot_retries(tmp_path: Path) -> None:
    backend = SpawnFails(BootError("guest did not come up"))
    dist, _ = make(tmp_path, backend, boot_retries=2)
    try:
        dist.add_job(many(1), RecordingMonitor())
        assert dist.wait_finished(timeout=30) is False
    finally:
        dist.close()
    assert backend.spawned == ["qemu1", "qemu1"]


def test_stop_returns_with_the_running_set_stopped_and_machines_idle(tmp_path: Path) -> None:
    """stop(wait=True): no JOBS_DONE follows the EXIT_EXTERNAL events; it must not hang."""
    backend = FakeBackend()
    dist, _ = make(tmp_path, backend, idle_linger=60.0)
    mon = RecordingMonitor()
    long = {"pkg": "hey", "period": 1_000_000, "numberofjobs": 1000, "x-run": range(3)}
    try:
        dist.add_job(TaskSet([_task(long)]), mon)
        _wait_for(lambda: any(m["current"] for m in dist.machines()))
        stopper = threading.Thread(target=dist.stop, kwargs={"wait": True}, daemon=True)
        stopper.start()
        stopper.join(30)  # a deadlock guard, not a timing assertion
        assert not stopper.is_alive(), "stop(wait=True) hangs"
        dist.wait_finished(timeout=30)
        assert mon.stopped == [0]
        assert mon.finished == [] and mon.bad == []
        # the slot reports the set stopped, then goes back to waiting for work
        _wait_for(lambda: [m["state"] for m in dist.machines()] == ["idle"])
        machines = dist.machines()
        assert len(backend.live_guests()) == 1  # the guest stays up
        assert not dist.get_distributor_state() or machines  # only the idle machine is left
    finally:
        dist.close()


def _task(spec: dict[str, Any]) -> Any:
    from farm.taskset import Task

    return Task(spec)


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")
