"""Test your own task sets and monitors the way farm's own tests do (a pytest plugin).

Installing farm registers :mod:`farm.testing.plugin` with pytest (entry point
``pytest11``), so these fixtures are there in any project without a conftest
import (none is autouse; they cost nothing until a test asks for one):

``farm_toml``         a farm.toml in the test's temporary directory (state and logs there)
``farm_config``       the FarmConfig read from it
``farm_recorder``     a :class:`RecordingMonitor`
``farm_fake``         a :class:`FakeFarm`: a Distributor on in-memory guests that a test can
                      crash, hang or fail to boot, no processes
``farm_local``        a Distributor on the local backend: real agent processes on loopback
``farm_postgres``     a private PostgreSQL server for the session (:class:`PostgresServer`)
``farm_postgres_url`` a fresh empty database on it, as a URL for PostgresMonitor

See docs/testing.md and examples/testing/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from farm.monitors.base import AbstractMonitor, taskset_variant

__all__ = ["FakeFarm", "RecordingMonitor", "wait_until", "write_farm_toml"]


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


class RecordingMonitor(AbstractMonitor):
    """Records every hook call by variant index (thread-safe), for assertions.

    ``started``, ``finished``, ``stopped``: variant indexes in call order;
    ``bad``: (index, tries); ``events``: (index, Event) in arrival order.
    """

    def __init__(self) -> None:
        self.started: list[int | None] = []
        self.finished: list[int | None] = []
        self.stopped: list[int | None] = []
        self.bad: list[tuple[int | None, int]] = []
        self.events: list[tuple[int | None, Any]] = []
        self._lock = threading.Lock()

    def __taskset_start__(self, taskset: Any) -> None:
        with self._lock:
            self.started.append(taskset_variant(taskset))

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        with self._lock:
            self.events.append((taskset_variant(taskset), event))

    def __taskset_finish__(self, taskset: Any) -> None:
        with self._lock:
            self.finished.append(taskset_variant(taskset))

    def __taskset_stop__(self, taskset: Any) -> None:
        with self._lock:
            self.stopped.append(taskset_variant(taskset))

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        with self._lock:
            self.bad.append((taskset_variant(taskset), tries))

    def event_types(self, index: int | None = None) -> list[str]:
        """Types of the events received (of variant ``index`` only, if given)."""
        with self._lock:
            return [str(e.type) for i, e in self.events if index is None or i == index]

    def wait_settled(self, count: int, timeout: float = 60.0) -> None:
        """Wait until ``count`` variants finished or were given up."""
        wait_until(
            f"{count} settled sets", lambda: len(self.finished) + len(self.bad) >= count, timeout
        )


def write_farm_toml(directory: Path, backend: str = "local", **settings: Any) -> Path:
    """A farm.toml in ``directory`` keeping state and logs there; ``settings`` override keys."""
    values: dict[str, Any] = {
        "backend": backend,
        "state_dir": str(directory / "state"),
        "log_dir": str(directory / "log"),
        "log_file": True,
        "heartbeat": 0.2,
        "heartbeat_timeout": 2.0,
        "idle_linger": 0.1,
        "boot_timeout": 30.0,
    }
    values.update(settings)
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value!r}")
        else:
            text = str(value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key} = "{text}"')
    path = directory / "farm.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class FakeFarm:
    """A Distributor on farm.backend.fake: in-memory guests, simulated task sets, no processes.

    ``crash()`` and ``hang()`` break running guests the way a dead or silent
    QEMU would (the farm replaces them and re-runs their sets); ``fail_boots``
    makes the next N boots fail.
    """

    def __init__(self, config: Any) -> None:
        """Start the Distributor on a fresh FakeBackend (close() stops it)."""
        from farm.backend.fake import FakeBackend, session_class_for
        from farm.core.distributor import Distributor

        self.backend = FakeBackend()
        self.distributor = Distributor(
            config, backend=self.backend, session_class=session_class_for(self.backend)
        )

    @property
    def fail_boots(self) -> int:
        """Boots still to fail (BootError) before guests come up again."""
        return self.backend.fail_boots

    @fail_boots.setter
    def fail_boots(self, n: int) -> None:
        self.backend.fail_boots = n

    def add(self, taskset: Any, monitor: Any = None, machines: int = 1) -> Any:
        """Add ``taskset`` (its every variant) for ``monitor``, with ``machines`` guests."""
        submission = self.distributor.add_job(taskset, monitor)
        self.distributor.set_max_machine_value(machines)
        return submission

    def guests(self) -> list[Any]:
        """The live fake guests."""
        return list(self.backend.live_guests())

    def crash(self, count: int = 1, timeout: float = 30.0) -> list[str]:
        """Crash ``count`` live guests (waits for them to exist); their names."""
        wait_until(f"{count} live guests", lambda: len(self.guests()) >= count, timeout)
        victims = self.guests()[:count]
        for guest in victims:
            guest.crash()
        return [g.name for g in victims]

    def hang(self, count: int = 1, timeout: float = 30.0) -> list[str]:
        """Make ``count`` live guests fall silent (no heartbeat); their names."""
        wait_until(f"{count} live guests", lambda: len(self.guests()) >= count, timeout)
        victims = self.guests()[:count]
        for guest in victims:
            guest.hang()
        return [g.name for g in victims]

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait until every added variant is settled (True) or ``timeout`` passes."""
        return bool(self.distributor.wait_finished(timeout=timeout))

    def close(self) -> None:
        """Stop the farm and its guests; idempotent."""
        self.distributor.close()
