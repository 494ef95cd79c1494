"""libvirt guests: one transient domain each, and the process-wide pieces they share.

The default event loop (needed by the embedded driver, console streams and
keepalive), the hostfwd port pool and the helpers that make sure a guest's
QEMU and screen are gone. :mod:`farm.backend.libvirt` creates the guests.
"""

from __future__ import annotations

import itertools
import logging
import random
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import libvirt
import psutil

from farm.backend.base import Guest, pid_stopped
from farm.backend.libvirt_console import ConsoleStream
from farm.backend.screen import quit_screen
from farm.errors import BackendError
from farm.procs import ProcessRegistry, terminate

log = logging.getLogger("farm.backend.libvirt")  # one logger for the backend and its guests

DESTROY_TIMEOUT = 5.0
_loop_lock = threading.Lock()
_loop_started = False


def ensure_event_loop() -> None:
    """Register libvirt's default event loop once per process, run it in a daemon thread.

    The embedded driver, console streams and keepalive need it; it must be
    registered before the first connection is opened.
    """
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.registerErrorHandler(lambda _ctx, err: log.debug("libvirt: %s", err), None)
        if libvirt.virEventRegisterDefaultImpl() < 0:
            raise BackendError("cannot register libvirt's default event loop")
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _run_event_loop() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            log.warning("libvirt event loop iteration failed")


class _Ports:
    """Host ports for hostfwd, never handed to two guests of this process at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[int] = set()

    def allocate(self, local: bool = True) -> int:
        """A port free here now (local), or a random high one (remote host: QEMU checks)."""
        with self._lock:
            for _ in range(100):
                if local:
                    with socket.socket() as sock:
                        sock.bind(("127.0.0.1", 0))
                        port = int(sock.getsockname()[1])
                else:
                    port = random.randint(20000, 60999)
                if port not in self._taken:
                    self._taken.add(port)
                    return port
        raise BackendError("no free TCP port for the agent's hostfwd")

    def release(self, port: int) -> None:
        with self._lock:
            self._taken.discard(port)


_PORTS = _Ports()


class LibvirtGuest(Guest):
    """A running transient domain; ``destroy()`` leaves no QEMU or screen behind."""

    def __init__(
        self,
        name: str,
        dom: libvirt.virDomain,
        address: tuple[str, int],
        registry: ProcessRegistry,
        *,
        qemu: psutil.Process | None = None,
        screen: subprocess.Popen[bytes] | None = None,
        console: Path | None = None,
        stream: ConsoleStream | None = None,
        hostfwd: bool = True,
    ) -> None:
        self.name = name
        self._dom = dom
        self._address = address
        self._hostfwd = hostfwd  # the port of ``address`` is a hostfwd port of _PORTS
        self._registry = registry
        self._qemu = qemu
        self._screen = screen
        self._console = console
        self._stream = stream
        self._lock = threading.Lock()
        self._destroyed = False
        self._screen_maker: threading.Thread | None = None
        self.log = log.getChild(name)

    def screen_later(self, start: Callable[[], subprocess.Popen[bytes] | None]) -> None:
        """Start the console's screen session with ``start`` in a thread, off the spawn's
        critical path (``destroy()`` waits for it, then quits the session)."""

        def run() -> None:
            try:
                screen = start()
            except Exception:  # no screen: the console log still has everything
                self.log.exception("cannot start the screen session")
                return
            with self._lock:
                self._screen = screen

        self._screen_maker = threading.Thread(target=run, name=f"screen-{self.name}", daemon=True)
        self._screen_maker.start()

    @property
    def pid(self) -> int | None:
        return self._qemu.pid if self._qemu is not None else None

    @property
    def console_log(self) -> Path | None:
        return self._console

    @property
    def uuid(self) -> str:
        """The domain's UUID (also on QEMU's command line)."""
        return str(self._dom.UUIDString())

    def address(self, timeout: float) -> tuple[str, int]:
        return self._address

    def alive(self) -> bool:
        if self._destroyed:
            return False
        if self._qemu is not None and (not _running(self._qemu) or pid_stopped(self._qemu.pid)):
            return False  # a SIGKILLed (or SIGSTOPped: hung) QEMU reads dead at once
        try:
            return bool(self._dom.isActive())
        except libvirt.libvirtError:
            return False  # a transient domain that stopped is gone

    def destroy(self) -> None:
        if not self._first_destroy():
            return
        if self._screen_maker is not None and self._screen_maker is not threading.current_thread():
            self._screen_maker.join()  # bounded: start_screen waits 3 s at most for its socket
        try:
            try:
                destroy_domain(self._dom, self.log)
            except BackendError as exc:
                if self._qemu is None:
                    raise
                self.log.warning("%s; making sure QEMU pid %d is gone", exc, self._qemu.pid)
            if self._qemu is not None:
                _ensure_gone(self._qemu, self.log)
        finally:
            if self._stream is not None:
                self._stream.close()
            if self._screen is not None:
                quit_screen(self.name, self._screen)
            _forget(self._registry, self.name, self.pid)
            _forget(
                self._registry, f"{self.name}.screen", self._screen.pid if self._screen else None
            )
            if self._hostfwd:
                _PORTS.release(self._address[1])
            self.log.debug("destroyed")


def destroy_domain(dom: libvirt.virDomain, glog: logging.Logger) -> None:
    """Hard-stop a domain (SIGTERM, then SIGKILL); one that is already gone is fine."""
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
            return
        raise BackendError(f"cannot destroy domain {dom.name()}: {exc}") from exc
    glog.debug("domain destroyed")


def _ensure_gone(proc: psutil.Process, glog: logging.Logger) -> None:
    """Make sure the domain's QEMU is dead (a zombie awaiting its reaper is)."""
    if not _running(proc):
        return
    try:
        proc.wait(DESTROY_TIMEOUT)
    except psutil.TimeoutExpired:
        glog.warning("QEMU pid %d outlived the domain; terminating it", proc.pid)
        terminate(proc.pid, timeout=3.0)
    except psutil.NoSuchProcess:
        pass


def _forget(registry: ProcessRegistry, key: str, pid: int | None) -> None:
    """Drop ``key`` from the registry if it still records ``pid`` (not a newer guest's)."""
    entry = registry.entries().get(key)
    if entry is not None and entry.get("pid") == pid:
        registry.forget(key)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _has_uuid(proc: psutil.Process, uuid: str) -> bool:
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return False
    return any(a == "-uuid" and b == uuid for a, b in itertools.pairwise(argv))
