"""The host side of a guest's identity port (virtio-serial ``farm.identity``).

A guest that boots with ``farm.identity=wait`` (a warm-start template, and so
every guest restored from it) says ``farm-identity: waiting`` on this port and
reads JSON lines: ``{"warm_up": true}`` has it run the warm-up set again in the
QEMU it now runs in and answer ``farm-identity: warm``; the identity (name, own
key, time, seed, [net]) starts its agent, which answers ``farm-identity: ok
NAME`` once it listens. Shared by the qemu and libvirt backends and their spares
(:mod:`farm.backend.snapshot`, :mod:`farm.backend.qemu_spare`,
:mod:`farm.backend.libvirt_snapshot`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from farm.backend.base import Guest
from farm.errors import BackendError

log = logging.getLogger(__name__)

PORT_NAME = "farm.identity"
WAITING = b"farm-identity: waiting"
#: asks a restored guest to run the warm-up set again before its identity, and its answer
WARM_UP, WARM = b'{"warm_up": true}\n', b"farm-identity: warm"


class SnapshotError(BackendError):
    """A snapshot could not be built or loaded, or a guest could not be restored from it."""


class SnapshotLoadFailed(SnapshotError):
    """QEMU could not load the snapshot (a damaged file or an incompatible QEMU)."""


class SnapshotCorrupt(SnapshotError):
    """The snapshot file was damaged (size or SHA256 differ); it has been removed."""


def connect(path: Path, alive: Callable[[], bool], timeout: float) -> socket.socket:
    """Connect to QEMU's identity socket as soon as it listens (QEMU must stay alive)."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(str(path))
            return sock
        except OSError as exc:
            sock.close()
            if not alive():
                raise SnapshotError("QEMU exited before its identity port was up") from exc
            if time.monotonic() >= deadline:
                raise SnapshotError(f"no identity socket {path} within {timeout:g} s") from exc
            time.sleep(0.002)


def read_line(sock: socket.socket, timeout: float, alive: Callable[[], bool]) -> bytes:
    """One line from the guest's identity port (SnapshotError on EOF or timeout)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SnapshotError(f"guest said nothing on its identity port within {timeout:g} s")
        sock.settimeout(min(left, 1.0))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            if not alive():
                raise SnapshotError("QEMU exited while farm waited for its guest") from None
            continue
        if not chunk:
            raise SnapshotError("QEMU closed the identity port (the guest or QEMU ended)")
        buf += chunk
    return buf.split(b"\n", 1)[0]


def warm_up_guest(ident: socket.socket, alive: Callable[[], bool], timeout: float) -> None:
    """Have the restored guest on ``ident`` run the warm-up set, in its new QEMU.

    QEMU's translation cache starts empty in every new QEMU: without this, the
    guest's first task set pays ~0.1 s of TCG translation that later sets do not
    (measured with ``info jit``: :mod:`farm.backend.qemu_spare`).
    """
    ident.sendall(WARM_UP)
    line = read_line(ident, timeout, alive)
    if line != WARM:
        raise SnapshotError(f"guest answered {line[:200]!r} to its warm-up")


def send_identity(
    ident: socket.socket,
    name: str,
    key: str,
    alive: Callable[[], bool],
    timeout: float,
    net: dict[str, str] | None = None,
) -> None:
    """Write the identity line (name, own key, time, seed, [net]); wait for the ack."""
    seed = secrets.token_hex(32)
    identity: dict[str, Any] = {"name": name, "token": key, "time": time.time(), "seed": seed}
    if net is not None:
        identity["net"] = net
    ident.sendall(json.dumps(identity).encode() + b"\n")
    line = read_line(ident, timeout, alive)
    if line != f"farm-identity: ok {name}".encode():
        raise SnapshotError(f"guest answered {line[:200]!r} to its identity")


class _Port(Protocol):
    def close(self) -> None: ...


G = TypeVar("G", bound=Guest)
P = TypeVar("P", bound=_Port)


@dataclass
class Spare(Generic[G, P]):
    """A restored guest made ahead (qemu_spare, libvirt_spare): warmed up, waiting for its
    identity on ``port``, from the snapshot ``source``."""

    guest: G
    port: P
    source: Path

    def discard(self) -> None:
        """Destroy the guest, close its identity port, remove its console log."""
        with contextlib.suppress(OSError):
            self.port.close()
        try:
            self.guest.destroy()
        except BackendError as exc:
            log.warning("spare %s: %s", self.guest.name, exc)
        if self.guest.console_log is not None:
            self.guest.console_log.unlink(missing_ok=True)
