"""The identity port of a libvirt guest, reached as a local socket or a libvirt stream.

On a local hypervisor farm connects to the unix socket QEMU listens on (in a
0700 directory of the state dir). On a remote one that socket is on another
host: farm opens the domain's ``farm.identity`` channel with
``virDomainOpenChannel``, a stream over the libvirt connection, so the
guest's key still travels only over the identity port (never on the guest
kernel's command line, which the remote host's process list would show).
:class:`StreamChannel` gives that stream the few socket methods
:mod:`farm.backend.snapshot`'s line helpers use.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

from farm.backend.identity_port import (
    PORT_NAME,
    WAITING,
    SnapshotError,
    connect,
    read_line,
    send_identity,
)
from farm.errors import ConfigError

log = logging.getLogger("farm.backend.libvirt")
_POLL = 0.002  # s between reads of a stream with nothing to read


class StreamChannel:
    """A non-blocking libvirt stream on a domain's ``farm.identity`` channel, socket-like."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain) -> None:
        self._timeout: float | None = None
        self._stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            dom.openChannel(PORT_NAME, self._stream, 0)
        except libvirt.libvirtError as exc:
            with contextlib.suppress(libvirt.libvirtError):
                self._stream.abort()
            raise SnapshotError(f"cannot open the identity channel: {exc}") from exc

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the end; TimeoutError after the timeout."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            try:
                data = self._stream.recv(size)
            except libvirt.libvirtError as exc:
                raise OSError(f"identity channel: {exc}") from exc
            if isinstance(data, bytes):
                return data
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("identity channel: nothing to read")
            time.sleep(_POLL)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self._stream.send(bytes(view))
            except libvirt.libvirtError as exc:
                raise OSError(f"identity channel: {exc}") from exc
            if sent < 0:
                time.sleep(_POLL)
                continue
            view = view[sent:]

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()

    def __enter__(self) -> StreamChannel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_port(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    sock: Path | None,
    alive: Callable[[], bool],
) -> socket.socket | StreamChannel:
    """The guest's identity port: its local socket ``sock``, else a channel stream."""
    if sock is not None:
        return connect(sock, alive, 10.0)
    return StreamChannel(conn, dom)


def hand_over(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    sock: Path | None,
    name: str,
    key: str,
    alive: Callable[[], bool],
    timeout: float,
) -> None:
    """Cold boot: wait for the guest to ask for its identity on its port, then give it."""
    if not key or any(c.isspace() for c in key):
        raise ConfigError("token must be non-empty and contain no whitespace")
    with open_port(conn, dom, sock, alive) as port:
        line = read_line(port, timeout, alive)  # type: ignore[arg-type]
        if not line.startswith(WAITING):
            raise SnapshotError(f"guest said {line[:200]!r}, not {WAITING!r}")
        send_identity(port, name, key, alive, timeout)  # type: ignore[arg-type]


def hand_over_later(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    name: str,
    key: str,
    alive: Callable[[], bool],
    timeout: float,
) -> threading.Thread:
    """:func:`hand_over` over a channel stream, in a daemon thread (spawn returns at once)."""

    def run() -> None:
        try:
            hand_over(conn, dom, None, name, key, alive, timeout)
        except (SnapshotError, ConfigError, OSError) as exc:
            level = logging.WARNING if alive() else logging.DEBUG
            log.getChild(name).log(level, "identity not delivered: %s", exc)

    thread = threading.Thread(target=run, name=f"identity-{name}", daemon=True)
    thread.start()
    return thread
