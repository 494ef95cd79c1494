"""The small typed interfaces between the Distributor and its slots, and what a slot is given.

A slot (farm.core.slot) never sees the Distributor: it is handed a
:class:`SlotEnvironment` (what it needs to boot and talk to a guest) and a
:class:`SlotPort` (the five things it may ask or tell the Distributor).
Monitors are reached through :class:`MonitorPort` (farm.monitors.MonitorThread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from farm.backend.base import Backend
from farm.config import FarmConfig
from farm.core.bootwatch import BootClock
from farm.core.records import RunRecord
from farm.events import Event
from farm.session.base import AbstractSession

#: builds the session to the agent of a guest at (host, port); made once per Distributor
SessionFactory = Callable[[str, int], AbstractSession]


@dataclass(frozen=True)
class SlotEnvironment:
    """Everything a slot needs besides its port: shared by every slot of one Distributor."""

    config: FarmConfig
    backend: Backend
    sessions: SessionFactory
    boot_slots: threading.BoundedSemaphore  # at most max_concurrent_boots boots at once
    token: str
    boot_clock: BootClock = field(default_factory=BootClock)  # learns the normal boot length


@dataclass(frozen=True)
class Assignment:
    """A run handed to a slot, with where its events go and its session parameters."""

    run: RunRecord
    monitor: MonitorPort
    params: tuple[object, ...] = ()


class SlotHandle(Protocol):
    """What the Distributor sees of a slot when the slot calls the port."""

    @property
    def machine_name(self) -> str: ...

    @property
    def retiring(self) -> bool: ...

    def begin_set(self, run: RunRecord) -> None:
        """The port hands ``run`` to the slot (called under the port's lock)."""
        ...

    def end_set(self) -> None:
        """The slot's run is reported finished or stopped (called under the port's lock)."""
        ...

    def settled(self, run: RunRecord) -> None:
        """The finished ``run`` is settled: its monitor saw all of it (on the monitor's thread)."""
        ...


class SlotPort(Protocol):
    """What a slot may ask or tell the Distributor (all thread-safe)."""

    def acquire(
        self, slot: SlotHandle, idle: Callable[[], None] | None = None
    ) -> Assignment | None:
        """Next run for ``slot``, waiting for work; None when the slot should shut down.

        ``idle`` is called (without the port's lock) before the first wait, if any.
        """
        ...

    def finished(self, slot: SlotHandle, work: Assignment) -> None:
        """``work`` finished on the slot's guest."""
        ...

    def failed(self, slot: SlotHandle, work: Assignment, *, count_try: bool, give_up: bool) -> None:
        """``work`` was interrupted: re-queue it (counting a try or not), or give it up now."""
        ...

    def gave_up(self, slot: SlotHandle, error: BaseException) -> None:
        """The slot stops trying to boot a guest (too many failures, or a bad config)."""
        ...

    def exited(self, slot: SlotHandle) -> None:
        """The slot's thread ends; it will ask nothing more."""
        ...

    def wake(self) -> None:
        """Wake slots waiting in acquire() so they re-check retire/pause."""
        ...


class MonitorPort(Protocol):
    """A monitor as the core drives it: hooks get the run record, calls never raise."""

    def started(self, run: RunRecord) -> None: ...

    def event(self, run: RunRecord, event: Event) -> None: ...

    def events(self, run: RunRecord, events: Sequence[Event]) -> None:
        """``event`` for each of ``events``, in order, queued as one call."""
        ...

    def finished(self, run: RunRecord) -> None: ...

    def stopped(self, run: RunRecord) -> None: ...

    def bad(self, run: RunRecord, tries: int) -> None: ...

    def then(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once every hook queued so far has run."""
        ...

    def hold(self) -> None:
        """Hold back the calling thread's calls until release() (then queued as one)."""
        ...

    def release(self) -> None:
        """Queue what the calling thread held, in order."""
        ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...
