"""Client of a running Distributor's control socket: ``ControlClient(path).status()``.

``status()`` returns the Distributor's status document::

    {"pid", "started", "limit", "state_dir", "backend", "network",
     "machines": [{"name", "state", "address": "host:port" | None, "current",
                   "uptime", "restarts", "sets_done", "retiring"}],   # Distributor.machines()
     "jobs": [...],        # Distributor.jobs()
     "leases": [...],      # bridged network: reservations and DHCP leases, else []
     "hosts": [...]}       # the backend's status() when it has one, else []
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from farm.control.sockpath import short_path, socket_path
from farm.errors import FarmError

DEFAULT_TIMEOUT = 5.0


class ControlError(FarmError):
    """The control socket could not be reached or answered with an error."""


class NoFarmRunning(ControlError):
    """No Distributor serves the control socket (absent, or left by a dead farm)."""


class ControlClient:
    """Asks the Distributor listening on ``path`` (``<state_dir>/control.sock``)."""

    def __init__(self, path: Path | str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path)
        self.timeout = timeout

    @classmethod
    def for_state_dir(
        cls, state_dir: Path | str, timeout: float = DEFAULT_TIMEOUT
    ) -> ControlClient:
        """The client of the farm whose state dir is ``state_dir``."""
        return cls(socket_path(Path(state_dir)), timeout)

    def status(self) -> dict[str, Any]:
        """Machines, jobs, leases, hosts, pid, started, limit of the running farm."""
        result = self.request("status")
        if not isinstance(result, dict):
            raise ControlError(f"{self.path}: status answer is not an object")
        return result

    def ping(self) -> bool:
        """True when a farm answers on the socket (never raises)."""
        try:
            self.request("ping")
        except FarmError:
            return False
        return True

    def request(self, op: str) -> Any:
        """Send one request, return its result; raises NoFarmRunning / ControlError."""
        if not self.path.exists():
            raise NoFarmRunning(f"no farm running here: {self.path} not found")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                with short_path(self.path) as text:
                    sock.connect(text)
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                raise NoFarmRunning(
                    f"no farm running here: {self.path} is left by a farm that is gone"
                ) from exc
            except OSError as exc:
                raise ControlError(f"cannot reach the farm at {self.path}: {exc}") from exc
            try:
                sock.sendall(json.dumps({"op": op}).encode() + b"\n")
                answer = _read_line(sock)
            except OSError as exc:
                raise ControlError(f"farm at {self.path} did not answer: {exc}") from exc
        finally:
            sock.close()
        try:
            reply = json.loads(answer)
        except ValueError as exc:
            raise ControlError(f"farm at {self.path} sent a malformed answer") from exc
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise ControlError(f"farm at {self.path}: {error}")
        return reply.get("result")


def _read_line(sock: socket.socket) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("connection closed before a full answer")
        buf += chunk
    return bytes(buf.split(b"\n", 1)[0])
