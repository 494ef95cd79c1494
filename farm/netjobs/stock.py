"""A NetJobs link to a stock ``NetJobsAgent.py`` (TheOtherOtherOperation/NetJobs).

The stock agent listens on TCP 16192 and speaks tab-delimited text, one
connection per run, **without any authentication**: whoever reaches the port
runs shell commands there. farm warns each time it uses one.

Setup: the client sends ``name<TAB>N``, ``command<TAB>C``, ``timeout<TAB>S``
(whole seconds, 0 = none) and ``// READY //``, each answered by its echo. Then
``// START //`` runs the commands; ``// KILL //`` kills them. The agent answers
``NAME<TAB>COMMAND<TAB>STATUS<TAB>OUTPUT`` per command (STATUS SUCCESS, ERROR,
TIMEOUT or KILLED; OUTPUT may span lines) and finally ``// DONE //``.

It has no clock to read and no exit status: the start is timed on the host
(``clock()`` reports offset 0), SUCCESS counts as exit status 0 and ERROR as 1.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import threading
import time
from typing import Any

from farm.errors import ConfigError, ProtocolError, SessionError
from farm.netjobs.targets import Address

log = logging.getLogger(__name__)

STOCK_PORT = 16192
DELIMITER = "\t"
READY = "// READY //"
START = "// START //"
KILL = "// KILL //"
DONE = "// DONE //"
_STATES = {"SUCCESS": "exited", "ERROR": "exited", "TIMEOUT": "timeout", "KILLED": "killed"}
WARNING = (
    "target {target}: stock NetJobsAgent at {address} is UNAUTHENTICATED "
    "(anyone who can reach its port can run commands there); use farm agents where you can"
)


def check_command(command: str) -> None:
    """ConfigError unless ``command`` can be sent as one tab-delimited field and run."""
    for char, what in (("\0", "a NUL character"), ("\t", "a tab"), ("\n", "a line break")):
        if char in command:
            raise ConfigError(f"command {command!r} contains {what}: it cannot be run")


class StockAgentLink:
    """An :class:`~farm.netjobs.client.AgentLink` over a stock NetJobsAgent connection."""

    def __init__(self, address: Address, connect_timeout: float = 10.0) -> None:
        """Connect (SessionError if the agent cannot be reached)."""
        self.address = address
        self.name = address.target
        self.io_timeout = max(connect_timeout, 1.0)
        try:
            self.sock = socket.create_connection((address.host, address.port), connect_timeout)
        except OSError as exc:
            raise SessionError(f"stock NetJobsAgent at {address} unreachable: {exc}") from exc
        self.sock.settimeout(self.io_timeout)
        self._buf = b""
        self._result: str | None = None
        self._done = False
        self._started: float | None = None
        self._started_wall: float | None = None
        self._ended: float | None = None
        self._starter: threading.Thread | None = None
        self._cancel = threading.Event()
        self._send_lock = threading.Lock()
        self._named = False
        self._killed = False

    # -- setup ----------------------------------------------------------------------

    def _send(self, text: str) -> None:
        with self._send_lock:
            try:
                self.sock.sendall((text + "\n").encode("utf-8"))
            except OSError as exc:
                raise SessionError(f"sending to NetJobsAgent at {self.address}: {exc}") from exc

    def _setup(self, text: str) -> None:
        """Send one setup string and wait for its echo."""
        self._send(text)
        want = (text + "\n").encode("utf-8")
        got = b""
        try:
            while len(got) < len(want):
                chunk = self.sock.recv(len(want) - len(got))
                if not chunk:
                    raise SessionError(f"NetJobsAgent at {self.address} closed the connection")
                got += chunk
        except TimeoutError as exc:
            raise SessionError(f"NetJobsAgent at {self.address} did not echo {text!r}") from exc
        except OSError as exc:
            raise SessionError(f"NetJobsAgent at {self.address}: {exc}") from exc
        if got != want:
            raise ProtocolError(
                f"NetJobsAgent at {self.address} echoed {got!r} for {text!r}: not a NetJobsAgent?"
            )

    def clock(self, samples: int = 1) -> tuple[float, float]:
        """(0.0, rtt): registers the name, timing its echo (the agent has no clock to read)."""
        t0 = time.monotonic()
        self._setup(f"name{DELIMITER}{self.name}")
        self._named = True
        return 0.0, time.monotonic() - t0

    def exec(self, command: str, at: float, timeout: float | None) -> dict[str, Any]:
        """Send the command and READY now, and START at host monotonic ``at``."""
        check_command(command)
        if not self._named:
            self.clock()
        seconds = 0 if timeout is None else max(1, math.ceil(timeout))
        self._setup(f"command{DELIMITER}{command}")
        self._setup(f"timeout{DELIMITER}{seconds}")
        self._setup(READY)
        late = time.monotonic() > at
        self._starter = threading.Thread(
            target=self._start_at, args=(at,), name="netjobs-stock-start", daemon=True
        )
        self._starter.start()
        return {"id": "1", "late": late}

    def _start_at(self, at: float) -> None:
        if self._cancel.wait(max(0.0, at - time.monotonic())):
            return
        self._started, self._started_wall = time.monotonic(), time.time()
        try:
            self._send(START)
        except SessionError as exc:
            log.warning("%s", exc)

    # -- running --------------------------------------------------------------------

    def _read(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while not self._done:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise SessionError(f"connection to NetJobsAgent at {self.address}: {exc}") from exc
            if not chunk:
                raise SessionError(
                    f"NetJobsAgent at {self.address} closed the connection before {DONE}"
                )
            self._buf += chunk
            text = self._buf.decode("utf-8", errors="replace")
            end = text.find(DONE)
            if end >= 0:
                self._result, self._done = text[:end], True
                self._ended = time.monotonic()

    def poll(self, rid: str, offset: int, wait: float) -> dict[str, Any]:
        """The command's state; its whole output once the agent said DONE."""
        self._read(wait)
        if not self._done:
            return {"data": b"", "next_offset": offset, "eof": False, "state": "running"}
        status, output = self._parse(self._result or "")
        data = output.encode("utf-8")
        state = _STATES.get(status, "killed" if self._killed else "failed")
        reply: dict[str, Any] = {
            "data": data[offset:],
            "next_offset": len(data),
            "eof": True,
            "state": state,
            "started": self._started,
            "started_wall": self._started_wall,
            "ended": self._ended,
            "exit_code": {"SUCCESS": 0, "ERROR": 1}.get(status),
            "detail": None,
        }
        if status == "ERROR":
            reply["detail"] = "ERROR reported by NetJobsAgent (it sends no exit status)"
        elif state == "failed":
            reply["detail"] = f"unexpected reply from NetJobsAgent: {status!r}"
        return reply

    def _parse(self, text: str) -> tuple[str, str]:
        """(STATUS, OUTPUT) of ``NAME<TAB>COMMAND<TAB>STATUS<TAB>OUTPUT``."""
        parts = text.split(DELIMITER, 3)
        if len(parts) < 3:
            return "", text
        status = parts[2].strip()
        output = parts[3] if len(parts) > 3 else ""
        return status, output[:-1] if output.endswith("\n") else output

    def kill(self, rid: str) -> dict[str, Any]:
        """Send KILL (the agent then reports KILLED and DONE)."""
        self._cancel.set()
        self._killed = True
        self._send(KILL)
        return {"id": rid}

    def close(self) -> None:
        """Drop the connection."""
        self._cancel.set()
        if self._starter is not None and self._starter is not threading.current_thread():
            self._starter.join(5)
        self.sock.close()
