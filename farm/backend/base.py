"""The small interface every VM backend implements (syzkaller-style Pool/Instance).

A ``Backend`` spawns ``Guest``s by name (``qemu1``, ``qemu2``, ...). A guest is
reachable at ``address()`` once its agent is up; readiness itself is the agent
handshake, done by the slot (farm.core.slot), not by the backend. ``destroy()`` is
idempotent and leaves no process behind. ``alive()`` is False for a guest whose
process is stopped (SIGSTOP): a frozen guest is as useless as a dead one, and
``progress()`` lets the slot tell a slow boot from a hung one.
"""

from __future__ import annotations

import abc
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil


class Guest(abc.ABC):
    """One running target (a QEMU guest, or an agent process for the local backend)."""

    name: str

    @abc.abstractmethod
    def address(self, timeout: float) -> tuple[str, int]:
        """(host, port) of the guest's agent; may wait up to ``timeout`` until known."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """True while the guest's process exists (a crashed guest reports False)."""

    _destroy_guard = threading.Lock()  # held for microseconds: one for every guest will do

    def _first_destroy(self) -> bool:
        """True for the first destroy() call only (thread-safe), so teardown runs once."""
        with Guest._destroy_guard:
            if getattr(self, "_destroyed", False):
                return False
            self._destroyed = True
            return True

    @abc.abstractmethod
    def destroy(self) -> None:
        """Stop the guest now (soft, then hard) and release its resources. Idempotent."""

    def progress(self) -> float | None:
        """A number that grows while the guest works; None when unknown.

        Default: CPU seconds of :attr:`pid` plus the bytes of :attr:`console_log`.
        A boot whose progress stands still is hung (see farm.core.bootwatch).
        """
        return process_progress(self.pid, self.console_log)

    @property
    def pid(self) -> int | None:
        """PID of the host process running the guest, when there is one."""
        return None

    @property
    def console_log(self) -> Path | None:
        """File the guest's serial console is logged to, when there is one."""
        return None

    def describe(self) -> str:
        """One-line diagnostic used in errors and logs."""
        return f"{self.name} pid={self.pid}"

    def __enter__(self) -> Guest:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()


class Backend(abc.ABC):
    """Spawns guests; knows how to find and reap what an earlier farm left behind.

    Optional capabilities have defaults here, so callers never probe with hasattr:
    ``capacity`` (guests it can take now; None: unlimited), ``size`` (number of
    fixed targets; None: not a fixed set), ``status()`` (per-host rows for
    ``farm status``) and ``on_capacity_changed`` (set by the Distributor, called
    by the backend, with no lock held, when its capacity grew).
    """

    kind: str = "?"
    on_capacity_changed: Callable[[], None] | None = None

    @property
    def capacity(self) -> int | None:
        """How many guests the backend can hold now; None: no limit of its own."""
        return None

    @property
    def size(self) -> int | None:
        """Number of fixed targets (existing hosts); None when guests are made on demand."""
        return None

    def status(self) -> list[dict[str, Any]]:
        """One row per host for ``farm status``; [] for single-host backends."""
        return []

    def _capacity_grew(self) -> None:
        """Tell the listener (the Distributor) that more guests fit now."""
        listener = self.on_capacity_changed
        if listener is not None:
            listener()

    @abc.abstractmethod
    def spawn(self, name: str, token: str) -> Guest:
        """Start guest ``name`` with agent token ``token``; raise BackendError on failure."""

    def reap_stale(self) -> list[str]:
        """Destroy guests of farm's that a dead farm process left; return their names."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend-wide resources (connections). Guests are destroyed by their owners."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise a FarmError explaining what is missing before anything starts."""

    def wake(self) -> None:  # noqa: B027 - optional hook
        """Wake spawn() calls waiting inside the backend (a machine was retired or killed)."""


#: /proc/PID/stat states of a stopped (SIGSTOP, a debugger) or zombie process
_STOPPED_STATES = (b"T", b"t", b"Z")
_PROCFS = os.path.exists("/proc/self/stat")


def pid_stopped(pid: int | None) -> bool:
    """True if process ``pid`` exists and is stopped (SIGSTOP, a debugger) or a zombie.

    Asked before every set a slot starts (Guest.alive): one read of /proc/PID/stat,
    not a psutil object (~30 us more on the dispatch path); psutil without procfs.
    """
    if pid is None:
        return False
    if not _PROCFS:
        return _psutil_stopped(pid)
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # gone
    try:
        stat = os.read(fd, 512)  # "pid (comm) S ...": comm may hold spaces and parentheses
    except OSError:
        return False  # exited meanwhile
    finally:
        os.close(fd)
    end = stat.rfind(b")")
    return end >= 0 and stat[end + 2 : end + 3] in _STOPPED_STATES


def _psutil_stopped(pid: int) -> bool:
    try:
        status = psutil.Process(pid).status()
    except psutil.Error:
        return False
    return status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE)


def process_progress(pid: int | None, console: Path | None = None) -> float | None:
    """CPU seconds of ``pid`` (user + system) plus the size of ``console``; None if unknown."""
    total: float | None = None
    if pid is not None:
        try:
            times = psutil.Process(pid).cpu_times()
            total = times.user + times.system
        except psutil.Error:
            pass
    if console is not None:
        try:
            total = (total or 0.0) + console.stat().st_size
        except OSError:
            pass
    return total
