"""A Distributor's control socket: read-only JSON status for ``farm status`` and NetJobs.

The Distributor opens ``<state_dir>/control.sock`` (mode 0600) and serves it
from one daemon thread. Protocol: the client sends one JSON object per line
(``{"op": "status"}`` or ``{"op": "ping"}``), the server answers each with one
JSON line ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
Nothing can be changed through it. A socket file left by a dead farm (nobody
accepts on it) is replaced; one a live farm serves is left alone (this
Distributor then runs without a control socket, with a warning).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from farm.config import FarmConfig
from farm.control.sockpath import short_path, socket_path

log = logging.getLogger(__name__)

#: a client gets this long to send its request line and read the answer
CLIENT_TIMEOUT = 5.0
MAX_REQUEST = 64 * 1024


def socket_alive(path: Path, timeout: float = 1.0) -> bool:
    """True when something accepts connections on the UNIX socket ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with short_path(path) as text:
            sock.connect(text)
        return True
    except OSError:
        return False
    finally:
        sock.close()


class StatusSource(Protocol):
    """The public Distributor methods the status document is made of."""

    @property
    def config(self) -> FarmConfig: ...

    def get_max_machine_value(self) -> int: ...

    def machines(self) -> list[dict[str, object]]: ...

    def jobs(self) -> list[dict[str, object]]: ...

    def backend_kind(self) -> str: ...

    def backend_status(self) -> list[dict[str, Any]]: ...


def status_of(dist: StatusSource, started: float) -> dict[str, Any]:
    """The status document of a Distributor (what ``ControlClient.status()`` returns)."""
    return {
        "pid": os.getpid(),
        "started": started,
        "limit": dist.get_max_machine_value(),
        "state_dir": str(Path(dist.config.state_dir).resolve()),
        "backend": dist.backend_kind() or dist.config.backend,
        "network": dist.config.network,
        "machines": dist.machines(),
        "jobs": dist.jobs(),
        "leases": _leases(dist.config),
        "hosts": _hosts(dist),
    }


def _leases(config: Any) -> list[dict[str, Any]]:
    """DHCP reservations and leases of the bridged network (empty in user-mode networking)."""
    if getattr(config, "network", "user") != "bridge":
        return []
    from farm.bridge.bridge import BridgeNetwork

    rows: list[dict[str, Any]] = []
    try:
        net = BridgeNetwork.from_config(config)  # reads files only; creates nothing
        leased = {lease.mac.lower(): lease for lease in net.dhcp.leases()}
        for name, mac, ip in net.plan.reservations():
            lease = leased.pop(mac.lower(), None)
            rows.append(
                {
                    "name": name,
                    "mac": mac,
                    "ip": str(ip),
                    "kind": "reservation",
                    "state": lease.state if lease else None,
                }
            )
        for lease in leased.values():
            rows.append(
                {
                    "name": lease.hostname,
                    "mac": lease.mac,
                    "ip": lease.ip,
                    "kind": "dynamic",
                    "state": lease.state,
                }
            )
    except Exception as exc:  # status must answer even when the lease file is unreadable
        log.debug("no leases for status: %s", exc)
    return rows


def _hosts(dist: StatusSource) -> list[dict[str, Any]]:
    """The backend's per-host status ([] for single-host backends)."""
    try:
        return list(dist.backend_status())
    except Exception as exc:
        log.warning("backend status failed: %s", exc)
        return [{"error": str(exc)}]


class ControlServer:
    """Serves a Distributor's status on a UNIX socket until :meth:`close`."""

    def __init__(self, dist: StatusSource, path: Path | None = None) -> None:
        self.dist = dist
        self.path = Path(path) if path else socket_path(dist.config.state_dir)
        self.started = time.time()
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Bind and start serving; False (logged) if another live farm owns the socket."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if socket_alive(self.path):
                log.warning(
                    "another farm serves %s; this one runs without a control socket", self.path
                )
                return False
            log.info("replacing stale control socket %s", self.path)
            self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with short_path(self.path) as text:
                sock.bind(text)
            os.chmod(self.path, 0o600)  # only the farm's user may ask (umask is process-wide)
            sock.listen(16)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="farm-control", daemon=True)
        self._thread.start()
        log.info("control socket %s", self.path)
        return True

    def close(self) -> None:
        """Stop the thread, join it, close the socket and remove its file; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        thread.join()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode and stat.S_ISSOCK(st.st_mode):
                self.path.unlink()
        except FileNotFoundError:
            pass

    # -- the serving thread ----------------------------------------------------
    def _serve(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ, "accept")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while True:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    try:
                        conn, _addr = self._sock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        log.warning("control socket accept failed: %s", exc)
                        return
                    with conn:
                        self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        """Answer every request line of one client until it closes (bounded by a timeout)."""
        conn.settimeout(CLIENT_TIMEOUT)
        buf = b""
        try:
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
                if len(buf) > MAX_REQUEST and b"\n" not in buf:
                    conn.sendall(_line({"ok": False, "error": "request too long"}))
                    return
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        conn.sendall(_line(self._answer(line)))
        except OSError as exc:  # timeouts and resets: the client's problem, not the farm's
            log.debug("control client dropped: %s", exc)

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            op = request.get("op") if isinstance(request, dict) else None
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if op == "ping":
            return {"ok": True, "result": {"pid": os.getpid()}}
        if op == "status":
            try:
                return {"ok": True, "result": status_of(self.dist, self.started)}
            except Exception as exc:
                log.exception("status request failed")
                return {"ok": False, "error": f"status failed: {exc}"}
        return {"ok": False, "error": f"unknown op {op!r} (status, ping)"}


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, default=str).encode() + b"\n"
