"""farm's one QMP client: JSON lines over QEMU's unix socket, synchronous, stdlib only.

A QMP server sends three kinds of messages: the greeting (``{"QMP": ...}``),
replies (``{"return": ...}`` or ``{"error": ...}``, one per command, in
order) and asynchronous events (``{"event": ...}``) at any time, including
between a command and its reply. :meth:`QmpClient.execute` therefore reads
until a reply arrives and keeps every event it passes in a bounded queue
(oldest dropped first) for :meth:`QmpClient.wait_event` / :meth:`events`.
farm's callers need a handful of commands from threads that may block, so the
asyncio ``qemu.qmp`` package would be more machinery than that.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from farm.errors import BackendError

log = logging.getLogger(__name__)

#: events kept between reads; older ones are dropped (a guest never read from must not grow us)
EVENT_QUEUE = 256


class QmpError(BackendError):
    """QEMU answered a QMP command with an error, or the connection failed."""


class QmpClient:
    """One QMP connection. ``__init__`` only records; :meth:`connect` negotiates."""

    def __init__(self, path: Path, timeout: float = 10.0, max_events: int = EVENT_QUEUE) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.greeting: dict[str, Any] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._sock: socket.socket | None = None
        self._buf = b""

    def connect(self, wait: float = 0.0, alive: Callable[[], bool] | None = None) -> QmpClient:
        """Connect (retrying for ``wait`` s while ``alive()``), read the greeting, negotiate."""
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
                break
            except OSError as exc:
                sock.close()
                if alive is not None and not alive():
                    raise QmpError(f"QEMU exited before its QMP socket {self.path} was up") from exc
                if time.monotonic() >= deadline:
                    raise QmpError(f"cannot connect to QMP socket {self.path}: {exc}") from exc
                time.sleep(0.01)
        self._sock, self._buf = sock, b""
        try:
            greeting = self._read()
            if "QMP" not in greeting:
                raise QmpError(f"QMP greeting expected, got {str(greeting)[:200]}")
            self.greeting = greeting
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise
        return self

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _read(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message (greeting, reply or event); QmpError on EOF, garbage or timeout."""
        if self._sock is None:
            raise QmpError("QMP connection is closed")
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(f"no QMP message within {budget:g} s")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise QmpError(f"QMP read failed: {exc}") from exc
            if not chunk:
                raise QmpError("QEMU closed the QMP socket")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError as exc:
            raise QmpError(f"bad QMP message {line[:200]!r}") from exc
        if not isinstance(msg, dict):
            raise QmpError(f"bad QMP message {line[:200]!r}")
        return msg

    def _keep(self, msg: dict[str, Any]) -> bool:
        """Queue ``msg`` if it is an event; True if it was one."""
        if "event" not in msg:
            return False
        if len(self._events) == self._events.maxlen:
            log.debug("QMP event queue full: dropping %s", self._events[0].get("event"))
        self._events.append(msg)
        return True

    def execute(
        self, cmd: str, *, _fds: tuple[int, ...] = (), _timeout: float | None = None, **args: Any
    ) -> Any:
        """Run ``cmd`` with ``args``; its ``return`` value, QmpError on an error reply/timeout."""
        if self._sock is None:
            raise QmpError(f"QMP {cmd}: connection is closed")
        request: dict[str, Any] = {"execute": cmd}
        if args:
            request["arguments"] = args
        data = json.dumps(request).encode() + b"\n"
        try:
            if _fds:  # SCM_RIGHTS along with the command (getfd)
                sent = socket.send_fds(self._sock, [data], list(_fds))
                if sent < len(data):
                    self._sock.sendall(data[sent:])
            else:
                self._sock.settimeout(self.timeout)
                self._sock.sendall(data)
        except OSError as exc:
            raise QmpError(f"QMP {cmd} failed: {exc}") from exc
        deadline = time.monotonic() + (self.timeout if _timeout is None else _timeout)
        while True:
            msg = self._read(max(0.0, deadline - time.monotonic()))
            if self._keep(msg):
                continue
            if "error" in msg:
                err = msg["error"] if isinstance(msg["error"], dict) else {}
                raise QmpError(f"QMP {cmd}: {err.get('class')}: {err.get('desc')}")
            if "return" in msg:
                return msg["return"]
            raise QmpError(f"QMP {cmd}: unexpected message {str(msg)[:200]}")

    #: the name farm used before (kept so callers read naturally either way)
    cmd = execute

    def getfd(self, fdname: str, fd: int) -> None:
        """Hand QEMU a file descriptor by name (``fd:NAME`` URIs of migrate commands)."""
        self.execute("getfd", _fds=(fd,), fdname=fdname)

    def events(self) -> list[dict[str, Any]]:
        """The queued events (oldest first), emptying the queue."""
        out = list(self._events)
        self._events.clear()
        return out

    def wait_event(
        self, name: str, timeout: float, match: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The next event ``name`` (whose ``data`` satisfies ``match``); QmpError on timeout.

        Queued events that do not match stay queued.
        """
        deadline = time.monotonic() + timeout
        for event in list(self._events):
            if event.get("event") == name and (match is None or match(event.get("data", {}))):
                self._events.remove(event)
                return event
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(f"no QMP event {name} within {timeout:g} s")
            try:
                msg = self._read(left)
            except QmpError:
                if time.monotonic() >= deadline:
                    raise QmpError(f"no QMP event {name} within {timeout:g} s") from None
                raise
            if msg.get("event") == name and (match is None or match(msg.get("data", {}))):
                return msg
            self._keep(msg)

    def close(self) -> None:
        """Close the connection (QEMU keeps running); idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect(path: Path, timeout: float = 10.0, wait: float | None = None) -> QmpClient:
    """A negotiated client on ``path``; the connect is retried for ``wait`` s (default timeout)."""
    return QmpClient(path, timeout).connect(timeout if wait is None else wait)
