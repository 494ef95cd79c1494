"""Fakes of the backend interface, for unit tests of Slot/Distributor (no processes).

``FakeBackend`` hands out ``FakeGuest``s; ``FakeGuestSession`` is a simulated
session bound to its guest, so a test can crash (``guest.crash()``) or hang
(``guest.hang()``) a guest and see the session fail like a real one would.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from farm.backend.base import Backend, Guest
from farm.errors import BootError, SessionError, SessionTimeout
from farm.events import Event
from farm.session.dry import SimulatedSession


class FakeGuest(Guest):
    """A guest that exists only in memory."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.crashed = threading.Event()
        self.hung = threading.Event()
        self.destroyed = False

    def address(self, timeout: float) -> tuple[str, int]:
        return "fake", self.port

    def alive(self) -> bool:
        return not self.destroyed and not self.crashed.is_set()

    def crash(self) -> None:
        self.crashed.set()

    def hang(self) -> None:
        self.hung.set()

    def destroy(self) -> None:
        self.destroyed = True


class FakeBackend(Backend):
    """Spawns FakeGuests; ``fail_boots`` makes the first N spawns raise BootError."""

    kind = "fake"

    def __init__(self, fail_boots: int = 0) -> None:
        self.fail_boots = fail_boots
        self.guests: dict[int, FakeGuest] = {}
        self.spawned: list[str] = []
        self._ports = itertools.count(40000)
        self._lock = threading.Lock()

    def spawn(self, name: str, token: str) -> Guest:
        with self._lock:
            self.spawned.append(name)
            if self.fail_boots > 0:
                self.fail_boots -= 1
                raise BootError(f"{name}: fake boot failure")
            guest = FakeGuest(name, next(self._ports))
            self.guests[guest.port] = guest
            return guest

    def live_guests(self) -> list[FakeGuest]:
        with self._lock:
            return [g for g in self.guests.values() if not g.destroyed]


class FakeGuestSession(SimulatedSession):
    """Simulated session that fails when its FakeGuest crashes or hangs."""

    backend: FakeBackend  # set by the factory below

    def __init__(self, host: str, port: int | None = None, **options: Any) -> None:
        super().__init__(host, port, time_scale=options.pop("time_scale", 0.001))
        self.guest = self.backend.guests[int(port or 0)]

    def connect(
        self, timeout: float | None = None, alive: Callable[[], bool] | None = None
    ) -> None:
        if not self.guest.alive():
            raise SessionError(f"{self.guest.name} is not running")

    def _write_start(self, description: dict[str, Any], params: list[Any]) -> None:
        pass

    def _write_events(self, events: list[Event]) -> None:
        pass

    def _receive(self, timeout: float) -> list[Event]:
        if self.guest.crashed.is_set() or self.guest.destroyed:
            raise SessionError(f"connection to {self.guest.name} lost")
        if self.guest.hung.is_set():
            raise SessionTimeout(f"{self.guest.name}: no heartbeat")
        return super()._receive(min(timeout, 0.05))


def session_class_for(backend: FakeBackend) -> type[FakeGuestSession]:
    """A FakeGuestSession subclass bound to ``backend`` (pass as session_class)."""
    return type("BoundFakeGuestSession", (FakeGuestSession,), {"backend": backend})
