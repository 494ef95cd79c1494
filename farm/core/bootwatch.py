"""Boot hang detection in seconds: learn how long this farm's boots take, watch each boot.

:class:`BootClock` keeps the durations of the last successful boots (shared by
every slot of a Distributor); a boot is overdue after ``factor`` times their
median (never less than ``floor`` seconds). :class:`BootWatch` is a thread
that watches one booting guest and calls ``on_hung`` when

* the guest is not alive (its process died or is stopped: SIGSTOP), at once;
* the boot is overdue and the guest made no progress (CPU time, console
  output: :meth:`farm.backend.base.Guest.progress`) for ``stall`` seconds;
* the boot took twice the overdue time, progress or not.

Before ``min_samples`` boots succeeded nothing is known and only death, a stop
or ``boot_timeout`` end a boot. The slot destroys a hung guest, which ends its
boot attempt and frees the boot slot other slots wait for.

After :meth:`BootWatch.booted` the same thread keeps checking only that the
guest is alive, for the guest's whole life: a guest stopped while idle or
while a request waits for its reply is reported within ``up_poll`` seconds
(``on_hung`` again, once), not after the heartbeat timeout.

A guest run by a local process (:attr:`~farm.backend.base.Guest.pid`) is watched
through a pidfd, which wakes the thread the moment the process exits (a
SIGKILLed QEMU is reported at once, booting or up), and its
``/proc/PID/stat``, one ``pread`` per poll for the stopped state (no psutil
object per check). :meth:`Guest.alive` (which may ask a hypervisor) is still
asked while booting, and every ``full_check`` seconds once up.
"""

from __future__ import annotations

import contextlib
import os
import select
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

from farm.backend.base import Guest

#: a change of progress smaller than this (CPU seconds + console bytes) is none
PROGRESS_EPS = 0.05


class BootClock:
    """How long a normal boot takes here, learnt from the farm's own boots."""

    def __init__(
        self, floor: float = 5.0, factor: float = 3.0, keep: int = 20, min_samples: int = 3
    ) -> None:
        self.floor = floor
        self.factor = factor
        self.min_samples = min_samples
        self._times: deque[float] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        """A boot succeeded after ``seconds``."""
        with self._lock:
            self._times.append(seconds)

    def median(self) -> float | None:
        """Median of the recent successful boots; None before ``min_samples`` of them."""
        with self._lock:
            if len(self._times) < self.min_samples:
                return None
            return statistics.median(self._times)

    def overdue(self) -> float | None:
        """Seconds after which a boot is late (``factor`` x median, at least ``floor``)."""
        median = self.median()
        return None if median is None else max(self.floor, self.factor * median)


class ProcWatch:
    """Cheap liveness of one local process: a pidfd (readable once it exited) and its stat."""

    def __init__(self, pid: int) -> None:
        """Raises OSError if the process is gone or cannot be watched (no pidfd_open)."""
        self.pidfd = os.pidfd_open(pid)
        try:
            self.stat_fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(self.pidfd)
            raise

    def ended(self) -> bool:
        """True if the process exited (a zombie too) or is stopped (SIGSTOP, a tracer)."""
        try:
            stat = os.pread(self.stat_fd, 512, 0)
        except OSError:  # ESRCH: gone
            return True
        state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
        return state in (b"T", b"t", b"Z", b"X", b"")

    def close(self) -> None:
        for fd in (self.pidfd, self.stat_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class BootWatch(threading.Thread):
    """Watches one guest; calls ``on_hung(reason, booting)`` once if it hangs or dies."""

    def __init__(
        self,
        guest: Guest,
        clock: BootClock,
        on_hung: Callable[[str, bool], None],
        started: float,
        poll: float = 0.2,
        stall: float = 2.0,
        up_poll: float = 1.0,
        full_check: float = 2.0,
    ) -> None:
        super().__init__(name=f"bootwatch-{guest.name}", daemon=True)
        self.guest = guest
        self.clock = clock
        self.on_hung = on_hung
        self.started = started  # time.monotonic() when the boot began
        self.poll = poll
        self.up_poll = up_poll  # once up: a stopped guest is still caught within ~1 s, and
        # seven idle guests cost the farm ~0.15 % CPU instead of ~1 % at the boot's pace
        self.full_check = full_check  # once up, with a pid: s between Guest.alive() calls
        self.stall = stall
        self.done = threading.Event()
        self.booting = True
        self._wake: tuple[int, int] | None = None  # stop() wakes a wait on the pidfd
        self._wake_lock = threading.Lock()

    def booted(self) -> None:
        """The guest is up: from now on only check that it stays alive."""
        self.booting = False

    def stop(self) -> None:
        """The boot ended (either way): stop watching."""
        with self._wake_lock:
            self.done.set()
            if self._wake is not None:
                os.write(self._wake[1], b"x")

    def run(self) -> None:
        proc: ProcWatch | None = None
        pid = self.guest.pid
        if pid is not None:
            try:
                proc = ProcWatch(pid)
            except OSError:
                proc = None  # gone already (alive() says so below) or no pidfd here
        if proc is not None:
            with self._wake_lock:
                self._wake = os.pipe()
        try:
            reason = self._watch(proc)
        finally:
            if proc is not None:
                proc.close()
            with self._wake_lock:
                for fd in self._wake or ():
                    os.close(fd)
                self._wake = None
        if reason is not None and not self.done.is_set():
            self.on_hung(reason, self.booting)

    def _wait(self, proc: ProcWatch | None, timeout: float) -> bool:
        """Sleep ``timeout`` s or until stopped or the process exits; False once stopped."""
        if proc is None or self._wake is None:
            return not self.done.wait(timeout)
        select.select([proc.pidfd, self._wake[0]], [], [], timeout)
        return not self.done.is_set()

    def _watch(self, proc: ProcWatch | None) -> str | None:
        mark, mark_at = self.guest.progress(), time.monotonic()
        checked = mark_at
        while self._wait(proc, self.poll if self.booting else self.up_poll):
            now = time.monotonic()
            if proc is not None and proc.ended():
                return "the guest process died or is stopped"
            if proc is None or self.booting or now - checked >= self.full_check:
                checked = now
                if not self.guest.alive():
                    return "the guest process died or is stopped"
            if not self.booting:
                continue
            value = self.guest.progress()
            if value is None or mark is None or abs(value - mark) >= PROGRESS_EPS:
                mark, mark_at = value, now
            overdue = self.clock.overdue()
            if overdue is None:
                continue
            elapsed = now - self.started
            if elapsed > overdue and value is not None and now - mark_at >= self.stall:
                return f"no progress for {now - mark_at:.1f}s after {elapsed:.1f}s of booting"
            if elapsed > 2 * overdue:
                return f"not up after {elapsed:.1f}s (a boot here takes {self.clock.median():.1f}s)"
        return None
