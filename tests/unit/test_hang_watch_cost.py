"""The hang watch reacts to a local guest process's exit at once and checks it cheaply.

A guest with a host PID is watched through a pidfd (woken by the exit itself, not
the next poll) and one read of its /proc stat per poll (a stop); ``Guest.alive()``
is asked only every ``full_check`` s once the guest is up. A boot whose guest was
killed or stopped from outside backs off without doubling the delay.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from farm.backend.base import Guest
from farm.backend.fake import FakeBackend, FakeGuest, session_class_for
from farm.core.bootwatch import BootClock, BootWatch
from farm.errors import SessionError

from .test_distributor import RecordingMonitor, make, many

pytestmark = pytest.mark.unit


class _ProcGuest(FakeGuest):
    """A fake guest backed by a real host process; counts alive() calls."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__("qemu1", 1)
        self.proc = proc
        self.alive_calls = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def alive(self) -> bool:
        self.alive_calls += 1
        return self.proc.poll() is None

    def progress(self) -> float | None:
        return None


def _watched(**kw: float) -> tuple[_ProcGuest, BootWatch, list[str]]:
    guest = _ProcGuest(subprocess.Popen(["sleep", "600"]))
    reasons: list[str] = []
    watch = BootWatch(guest, BootClock(), lambda r, _b: reasons.append(r), time.monotonic(), **kw)
    watch.start()
    return guest, watch, reasons


def test_an_up_guests_killed_process_is_reported_before_the_next_poll() -> None:
    guest, watch, reasons = _watched(poll=0.01, up_poll=600.0, full_check=600.0)
    try:
        watch.booted()
        time.sleep(0.1)  # now waiting out the 600 s up_poll
        guest.proc.kill()
        watch.join(60)  # only the pidfd can wake it this side of 600 s
        assert not watch.is_alive() and reasons and "died" in reasons[0]
    finally:
        guest.proc.kill()
        guest.proc.wait()


def test_a_stopped_process_is_reported_from_its_stat_without_alive() -> None:
    guest, watch, reasons = _watched(poll=0.01, up_poll=0.01, full_check=600.0)
    try:
        watch.booted()
        time.sleep(0.1)
        calls = guest.alive_calls
        guest.proc.send_signal(signal.SIGSTOP)
        watch.join(60)
        assert reasons and "stopped" in reasons[0]
        assert guest.alive_calls == calls  # up: the stat read caught it, no alive() call
    finally:
        guest.proc.kill()
        guest.proc.wait()


def test_a_stopped_watch_ends_its_wait_at_once() -> None:
    guest, watch, reasons = _watched(poll=600.0, up_poll=600.0)
    try:
        time.sleep(0.05)
        watch.stop()
        watch.join(60)  # woken through its pipe, not after 600 s
        assert not watch.is_alive() and reasons == []
    finally:
        guest.proc.kill()
        guest.proc.wait()


class _DeadOnArrival(FakeBackend):
    """Guests die during their boot: a kill from outside."""

    def __init__(self) -> None:
        super().__init__()
        self.slots: list[threading.Thread] = []

    def spawn(self, name: str, token: str) -> Guest:
        self.slots.append(threading.current_thread())
        guest = super().spawn(name, token)
        assert isinstance(guest, FakeGuest)
        guest.crash()
        return guest


class _Refused(_DeadOnArrival):
    """Guests live on but their agent never answers: a broken setup."""

    def spawn(self, name: str, token: str) -> Guest:
        guest = super().spawn(name, token)
        assert isinstance(guest, FakeGuest)
        guest.crashed.clear()
        return guest


def _refusing(backend: FakeBackend) -> type:
    class Refusing(session_class_for(backend)):  # type: ignore[misc]
        def connect(self, timeout: float | None = None, alive: object = None) -> None:
            raise SessionError("connection refused")

    return Refusing


@pytest.mark.parametrize("dead", [True, False])
def test_boots_killed_from_outside_do_not_double_the_back_off(tmp_path: Path, dead: bool) -> None:
    backend = _DeadOnArrival() if dead else _Refused()
    dist, _ = make(tmp_path, backend, session=_refusing(backend), boot_retries=3)
    try:
        dist.add_job(many(1), RecordingMonitor())
        assert dist.wait_finished(timeout=60) is False  # three failed boots: stalled
    finally:
        dist.close()
    steps = {getattr(slot, "_backoff_steps", None) for slot in backend.slots}
    assert len(backend.slots) == 3 and steps == ({0} if dead else {2}), (
        steps
    )  # no step after the last


def test_pid_stopped_reads_proc_stat_without_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guest.alive() runs before every set's start: no psutil object per call."""
    import psutil

    from farm.backend import base

    def no_psutil(*_a: object, **_k: object) -> None:
        raise AssertionError("psutil.Process used on the dispatch path")

    monkeypatch.setattr(psutil, "Process", no_psutil)
    proc = subprocess.Popen(["sleep", "600"])
    try:
        assert not base.pid_stopped(proc.pid)
        proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not base.pid_stopped(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert base.pid_stopped(proc.pid)
        proc.send_signal(signal.SIGCONT)
        while base.pid_stopped(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not base.pid_stopped(proc.pid)
        proc.kill()
        while not base.pid_stopped(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert base.pid_stopped(proc.pid)  # a zombie until reaped
    finally:
        proc.kill()
        proc.wait()
    assert not base.pid_stopped(proc.pid)  # reaped: gone
    assert not base.pid_stopped(None)
