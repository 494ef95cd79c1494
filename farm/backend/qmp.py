"""A tiny synchronous QMP client (JSON lines over QEMU's unix socket), stdlib only.

farm needs four commands (``stop``, ``getfd``, ``migrate``, ``migrate-incoming``,
``cont``) and one event (``MIGRATION``) from a thread that may block; the asyncio
``qemu.qmp`` package would be more machinery than that. Events QEMU sends
between replies are kept for :meth:`Qmp.wait_event`.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from farm.errors import BackendError


class QmpError(BackendError):
    """QEMU answered a QMP command with an error, or the socket failed."""


class Qmp:
    """One QMP connection; ``cmd()`` sends a command and returns its ``return`` value."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            try:
                sock.connect(str(path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise QmpError(f"cannot connect to QMP socket {path}: {exc}") from exc
                time.sleep(0.01)
        self._sock = sock
        self._timeout = timeout
        self._events: list[dict[str, Any]] = []
        self._reader = sock.makefile("rb")
        try:
            self._read()  # greeting
            self.cmd("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    def _read(self) -> dict[str, Any]:
        try:
            line = self._reader.readline()
        except OSError as exc:
            raise QmpError(f"QMP read failed: {exc}") from exc
        if not line:
            raise QmpError("QEMU closed the QMP socket")
        try:
            msg = json.loads(line)
        except ValueError as exc:
            raise QmpError(f"bad QMP message {line[:200]!r}") from exc
        if not isinstance(msg, dict):
            raise QmpError(f"bad QMP message {line[:200]!r}")
        return msg

    def cmd(self, name: str, *, _fds: tuple[int, ...] = (), **arguments: Any) -> Any:
        """Run one command; QmpError if QEMU reports an error."""
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        data = json.dumps(request).encode() + b"\n"
        try:
            if _fds:  # SCM_RIGHTS along with the command (getfd)
                sent = socket.send_fds(self._sock, [data], list(_fds))
                if sent < len(data):
                    self._sock.sendall(data[sent:])
            else:
                self._sock.sendall(data)
        except OSError as exc:
            raise QmpError(f"QMP {name} failed: {exc}") from exc
        while True:
            msg = self._read()
            if "event" in msg:
                self._events.append(msg)
                continue
            if "error" in msg:
                err = msg["error"]
                raise QmpError(f"QMP {name}: {err.get('class')}: {err.get('desc')}")
            return msg.get("return")

    def getfd(self, fdname: str, fd: int) -> None:
        """Hand QEMU a file descriptor by name (``fd:NAME`` URIs of migrate commands)."""
        self.cmd("getfd", _fds=(fd,), fdname=fdname)

    def wait_event(
        self, name: str, timeout: float, match: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The next event ``name`` (whose ``data`` satisfies ``match``); QmpError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            while self._events:
                event = self._events.pop(0)
                if event.get("event") == name and (match is None or match(event.get("data", {}))):
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(f"no QMP event {name} within {timeout:g} s")
            self._sock.settimeout(left)
            try:
                msg = self._read()  # a timeout here is final: QmpError
            finally:
                self._sock.settimeout(self._timeout)
            if "event" in msg:
                self._events.append(msg)

    def close(self) -> None:
        """Close the connection (QEMU keeps running)."""
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
