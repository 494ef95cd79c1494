"""SlotPool: the scheduling state of a Distributor, and the SlotPort its slots talk to.

Holds the submissions (FIFO), the live slots, the monitor wrappers and the
machine limit under one condition variable. Slots call the port methods
(``acquire``, ``finished``, ``failed``, ``gave_up``, ``exited``, ``wake``);
the Distributor's public methods change the rest under ``cond``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from farm.core.ports import Assignment, MonitorPort, SlotEnvironment, SlotHandle
from farm.core.slot import Slot
from farm.core.submission import Submission
from farm.monitors.thread import MonitorThread, NullMonitor

log = logging.getLogger(__name__)

#: finished submissions kept for jobs()/status; older ones are dropped so a farm fed work for
#: days does not keep every submission's task set and counters (soak: ~6 KiB per submission)
KEEP_DONE_JOBS = 100


class SlotPool:
    """Submissions, slots and monitors of one Distributor; implements the SlotPort."""

    def __init__(self, env: SlotEnvironment, limit: int) -> None:
        self.env = env
        self.cond = threading.Condition()
        self.submissions: list[Submission] = []
        self.slots: dict[str, Slot] = {}
        self.monitors: dict[int, MonitorThread] = {}
        self.limit = limit
        self.paused = False
        self.closed = False
        self.gave_up_slots: dict[str, str] = {}

    # -- the SlotPort ----------------------------------------------------------------
    def acquire(
        self, slot: SlotHandle, idle: Callable[[], None] | None = None
    ) -> Assignment | None:
        """Next run for ``slot``; None when it should shut down.

        ``idle`` runs before the first wait, outside the lock (the slot queues the
        monitor calls it held back for its next start request), then state is re-checked.
        """
        linger = self.env.config.idle_linger
        deadline = time.monotonic() + linger
        with self.cond:
            while True:
                if slot.retiring or self.paused:
                    return None
                for sub in self.submissions:
                    exhausted = sub.exhausted
                    run = sub.take()
                    if run is not None:
                        slot.begin_set(run)
                        return Assignment(run, sub.monitor, sub.params)
                    if sub.exhausted and not exhausted:
                        # found out here that its variants ran out: it may be done now,
                        # which wait_finished() and friends must hear of at once (not when
                        # this slot leaves at idle_linger)
                        self.cond.notify_all()
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not any(s.has_work() for s in self.submissions):
                    return None
                if idle is not None:
                    call, idle = idle, None
                    self.cond.release()  # acquired once, just above: this unlocks it
                    try:
                        call()
                    finally:
                        self.cond.acquire()
                    continue
                self.cond.wait(max(remaining, 0.05) if remaining > 0 else 0.5)

    def finished(self, slot: SlotHandle, work: Assignment) -> None:
        """Report the set finished; settle it once the monitor has seen all its events.

        The settling runs on the monitor's thread after its hooks (results reach
        the store before the journal says finished), so the slot goes on to its
        next set at once instead of waiting for a slow monitor to drain (its log line is
        written there too, off the dispatch path). The journal
        says 'finishing' before the monitor is told: a farm that dies before the
        settle re-runs the set on resume and tells the monitor to replace its record.
        """
        sub = self._submission(work)
        sub.finishing(work.run)
        work.monitor.finished(work.run)
        with self.cond:
            slot.end_set()

        def settle() -> None:
            with self.cond:
                sub.complete(work.run)
                released = self.release_monitors()
                self.cond.notify_all()
            slot.settled(work.run)
            for mon in released:
                mon.close()  # on its own thread (this one) close() only queues the stop

        work.monitor.then(settle)

    def failed(self, slot: SlotHandle, work: Assignment, *, count_try: bool, give_up: bool) -> None:
        """Report the set stopped; re-queue it or give it up (``give_up``: at once)."""
        sub = self._submission(work)
        work.monitor.stopped(work.run)
        with self.cond:
            slot.end_set()
            tries = sub.fail(work.run, count_try=count_try, give_up=give_up)
            self.rebalance()
            self.cond.notify_all()
        if tries:
            log.error("set %s #%s given up after %d tries", work.run.key, work.run.index, tries)
            work.monitor.bad(work.run, tries)
        with self.cond:
            released = self.release_monitors()
        for mon in released:
            mon.close()

    def gave_up(self, slot: SlotHandle, error: BaseException) -> None:
        with self.cond:
            self.gave_up_slots[slot.machine_name] = str(error)
            self.cond.notify_all()

    def exited(self, slot: SlotHandle) -> None:
        with self.cond:
            self.slots.pop(slot.machine_name, None)
            log.info("%s shut down", slot.machine_name)
            self.rebalance()
            self.cond.notify_all()

    def wake(self) -> None:
        """Wake slots waiting for work (they re-check retire/pause)."""
        with self.cond:
            self.cond.notify_all()

    # -- for the Distributor -----------------------------------------------------------
    def capacity_changed(self) -> None:
        """The backend can take more guests again (a hypervisor is back): fill the room."""
        with self.cond:
            self.rebalance()
            self.cond.notify_all()

    def stalled(self) -> bool:
        """Every slot gave up booting and none is left (call with ``cond`` held)."""
        return bool(self.gave_up_slots) and not self.slots

    def rebalance(self) -> None:
        """Retire surplus slots or start missing ones (call with ``cond`` held)."""
        if self.closed:
            return
        active = [m for m in self.slots.values() if not m.retiring]
        surplus = len(active) - self.limit
        if surplus > 0:
            # retire idle machines first, then the highest-numbered ones
            active.sort(key=lambda m: (m.current is not None, -_slot_number(m.machine_name)))
            for m in active[:surplus]:
                log.info(
                    "%s will shut down after its current set (limit %d)",
                    m.machine_name,
                    self.limit,
                )
                m.retire()
            self.cond.notify_all()
            return
        if self.paused or self.gave_up_slots or not any(s.has_work() for s in self.submissions):
            return
        # a multi-host backend may take fewer guests than the limit while hosts are down:
        # extra slots would only fail to boot, back off and give up
        capacity = self.env.backend.capacity
        room = self.limit if capacity is None else min(self.limit, capacity)
        for _ in range(room - len(active)):
            name = self._free_name()
            slot = Slot(self.env, self, name)
            self.slots[name] = slot
            slot.start()

    def release_monitors(self) -> list[MonitorThread]:
        """Forget old finished submissions; drop the monitor threads none unfinished uses.

        Call with ``cond`` held. A farm fed submissions with a monitor each must not keep
        a thread and the monitor's open files per finished one; the caller closes them
        outside the lock (farm's monitors reopen lazily if given to a later submission).
        """
        done = [s for s in self.submissions if s.done]
        for old in done[: max(0, len(done) - KEEP_DONE_JOBS)]:  # status history, bounded
            self.submissions.remove(old)
        in_use = {id(s.monitor) for s in self.submissions if not s.done}
        released = {k: m for k, m in self.monitors.items() if id(m) not in in_use}
        for key in released:
            del self.monitors[key]
        return list(released.values())

    def monitor_for(self, monitor: object) -> MonitorPort:
        """The one wrapper of ``monitor`` (a thread of its own); a no-op for None."""
        if monitor is None:
            return NullMonitor()
        with self.cond:
            wrapped = self.monitors.get(id(monitor))
            if wrapped is None:
                wrapped = MonitorThread(monitor)
                self.monitors[id(monitor)] = wrapped
            return wrapped

    def _submission(self, work: Assignment) -> Submission:
        with self.cond:
            for sub in self.submissions:
                if sub.key == work.run.key and sub.in_flight.get(work.run.index) is work.run:
                    return sub
        raise LookupError(f"run {work.run.label} belongs to no submission")  # a bug

    def _free_name(self) -> str:
        n = 1
        while f"qemu{n}" in self.slots:
            n += 1
        return f"qemu{n}"


def _slot_number(name: str) -> int:
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else 0
