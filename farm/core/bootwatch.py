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
while a request waits for its reply is reported within ``poll`` seconds
(``on_hung`` again, once), not after the heartbeat timeout.
"""

from __future__ import annotations

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
    ) -> None:
        super().__init__(name=f"bootwatch-{guest.name}", daemon=True)
        self.guest = guest
        self.clock = clock
        self.on_hung = on_hung
        self.started = started  # time.monotonic() when the boot began
        self.poll = poll
        self.up_poll = up_poll  # once up: a stopped guest is still caught within ~1 s, and
        # seven idle guests cost the farm ~0.15 % CPU instead of ~1 % at the boot's pace
        self.stall = stall
        self.done = threading.Event()
        self.booting = True

    def booted(self) -> None:
        """The guest is up: from now on only check that it stays alive."""
        self.booting = False

    def stop(self) -> None:
        """The boot ended (either way): stop watching."""
        self.done.set()

    def run(self) -> None:
        reason = self._watch()
        if reason is not None and not self.done.is_set():
            self.on_hung(reason, self.booting)

    def _watch(self) -> str | None:
        mark, mark_at = self.guest.progress(), time.monotonic()
        while not self.done.wait(self.poll if self.booting else self.up_poll):
            now = time.monotonic()
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
