"""Every failure loop backs off and gives up; a hung boot is caught in seconds (BootWatch)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from farm.backend.base import Guest
from farm.backend.fake import FakeBackend, FakeGuest, FakeGuestSession, session_class_for
from farm.core.bootwatch import BootClock, BootWatch
from farm.errors import SessionError

from .test_core_policy import SpawnFails
from .test_distributor import RecordingMonitor, make, many

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("error", [TypeError("expected str, got int"), KeyError("k")])
def test_unexpected_spawn_exception_counts_as_a_boot_failure(
    tmp_path: Path, error: Exception
) -> None:
    backend = SpawnFails(error)
    dist, _ = make(tmp_path, backend, boot_retries=3)
    try:
        dist.add_job(many(1), RecordingMonitor())
        assert dist.wait_finished(timeout=60) is False  # stalled, not looping
        assert dist.stalled()
        time.sleep(0.3)  # nothing respawns after giving up
    finally:
        dist.close()
    assert backend.spawned == ["qemu1"] * 3


# -- BootClock / BootWatch -------------------------------------------------------------------


def test_boot_clock_learns_three_times_the_median_with_a_floor() -> None:
    clock = BootClock(floor=5.0, factor=3.0, min_samples=3)
    assert clock.overdue() is None
    for seconds in (1.0, 2.0, 30.0):
        clock.record(seconds)
    assert clock.median() == 2.0 and clock.overdue() == 6.0
    fast = BootClock(floor=5.0)
    for _ in range(3):
        fast.record(0.1)
    assert fast.overdue() == 5.0


class _Watched(FakeGuest):
    """A fake guest with settable progress and stop state."""

    def __init__(self) -> None:
        super().__init__("qemu1", 1)
        self.value: float | None = 0.0
        self.stopped = False

    def alive(self) -> bool:
        return super().alive() and not self.stopped

    def progress(self) -> float | None:
        return self.value


def _watch(
    guest: Guest, clock: BootClock, started: float, **kw: float
) -> tuple[BootWatch, list[str]]:
    reasons: list[str] = []
    watch = BootWatch(guest, clock, lambda r, _b: reasons.append(r), started, poll=0.02, **kw)
    watch.start()
    return watch, reasons


def _learnt(median: float) -> BootClock:
    clock = BootClock(floor=0.1, factor=3.0)
    for _ in range(3):
        clock.record(median)
    return clock


def test_stopped_guest_is_hung_at_once_even_before_anything_is_learnt() -> None:
    guest = _Watched()
    watch, reasons = _watch(guest, BootClock(), time.monotonic())
    guest.stopped = True
    watch.join(10)
    assert reasons and "stopped" in reasons[0]


def test_no_progress_after_the_normal_boot_length_is_hung() -> None:
    guest = _Watched()
    watch, reasons = _watch(guest, _learnt(0.05), time.monotonic(), stall=0.2)
    watch.join(10)
    assert not watch.is_alive() and reasons and "no progress" in reasons[0]


def test_a_progressing_boot_gets_twice_the_overdue_time() -> None:
    guest = _Watched()
    watch, reasons = _watch(guest, _learnt(0.1), time.monotonic(), stall=0.2)
    while watch.is_alive():
        assert guest.value is not None
        guest.value += 1.0  # console output keeps coming
        time.sleep(0.01)
    assert reasons and "not up after" in reasons[0]


def test_nothing_learnt_means_only_death_ends_a_boot() -> None:
    guest = _Watched()
    watch, reasons = _watch(guest, BootClock(), time.monotonic() - 1000.0, stall=0.05)
    time.sleep(0.3)
    watch.stop()
    watch.join(5)
    assert reasons == []


def test_after_boot_only_a_dead_or_stopped_guest_is_reported() -> None:
    guest = _Watched()
    watch, reasons = _watch(guest, _learnt(0.01), time.monotonic(), stall=0.05)
    watch.booted()
    time.sleep(0.3)  # no progress, long past "overdue": fine once booted
    assert reasons == [] and watch.is_alive()
    guest.stopped = True
    watch.join(10)
    assert reasons and "stopped" in reasons[0]


def test_a_stopped_watch_reports_nothing() -> None:
    guest = _Watched()
    watch, reasons = _watch(guest, _learnt(0.01), time.monotonic(), stall=0.05)
    watch.stop()
    watch.join(5)
    assert reasons == []


# -- a slot whose boot hangs ---------------------------------------------------------------


class HangingBackend(FakeBackend):
    """The first ``hang`` guests never answer the handshake and make no progress."""

    def __init__(self, hang: int) -> None:
        super().__init__()
        self.hang = hang

    def spawn(self, name: str, token: str) -> Guest:
        guest = super().spawn(name, token)
        with self._lock:
            if self.hang > 0:
                self.hang -= 1
                assert isinstance(guest, FakeGuest)
                guest.hang()
        return guest


def _hanging_session(backend: FakeBackend) -> type:
    base = session_class_for(backend)

    class HangsWhileConnecting(base):  # type: ignore[valid-type,misc]
        def connect(
            self, timeout: float | None = None, alive: Callable[[], bool] | None = None
        ) -> None:
            guest: FakeGuest = self.guest
            if guest.hung.is_set():  # like a frozen QEMU: blocks until the guest is gone
                end = time.monotonic() + (timeout or 100.0)
                while not guest.destroyed and time.monotonic() < end:
                    time.sleep(0.01)
                raise SessionError(f"{guest.name}: no hello")
            FakeGuestSession.connect(self, timeout, alive)

    return HangsWhileConnecting


def test_hung_boot_is_ended_long_before_boot_timeout_and_frees_the_boot_slot(
    tmp_path: Path,
) -> None:
    backend = HangingBackend(hang=1)
    dist, _ = make(
        tmp_path,
        backend,
        _hanging_session(backend),
        boot_timeout=600.0,
        max_concurrent_boots=1,
        log_file=True,
    )
    clock = dist._pool.env.boot_clock
    for _ in range(3):
        clock.record(0.01)  # boots here are quick: overdue after the 5 s floor
    mon = RecordingMonitor()
    done = threading.Event()
    try:
        dist.add_job(many(2), mon)
        waiter = threading.Thread(target=lambda: done.set() if dist.wait_finished(60) else None)
        waiter.start()
        waiter.join(90)
        assert done.is_set(), dist.jobs()
    finally:
        dist.close()
    assert len(backend.spawned) == 2  # the hung guest, then its replacement
    assert backend.guests[40000].destroyed
    text = (tmp_path / "log" / "distributor.log").read_text()
    assert "booting guest hung" in text and "boot 1 hung" in text
