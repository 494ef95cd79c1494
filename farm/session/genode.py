"""GenodeSession: taskgen's Genode dom0 Taskloader protocol, so real Genode images work.

Wire format and byte order: farm.session.genode_wire (little-endian uint32s,
as taskgen sent them). start() sends, in taskgen's order: CLEAR, OPTIMIZE (if
an admission-control dict was given), SEND_DESCS, SEND_BINARIES (each binary
after the target's GO_SEND) and START. run() reads pushed profiles with a
selector; a profile may hold one event or many, and may be split across reads.

Genode events carry no job number: farm numbers jobs per task from 0 in START
order; an exit closes the task's oldest open job; NOT_SCHEDULED is a job of
its own with no START. Genode's OUT_OF_CAPS maps to OUT_OF_QUOTA (detail
"OUT_OF_CAPS"); any other unknown type becomes a NOTICE. Time stamps are ms
on the target and seconds in farm's Event.

Binaries go once per session: a binary the target already received on this
connection (same name, same bytes) is not sent again; SEND_BINARIES then
carries only the new ones (maybe 0). ``binaries_dir`` is taskgen's ``bin/``
directory: a task whose ``pkg`` names a file there has that file uploaded.
``reboot_genode()`` sends REBOOT; the next start() dials the rebooted target.
"""

from __future__ import annotations

import hashlib
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from farm.errors import ConfigError, ProtocolError, SessionError, SessionTimeout
from farm.events import EXIT_TYPES, Event, EventType
from farm.session.base import (
    AbstractSession,
    TaskSetLike,
    Unreachable,
    read_binaries,
    retry_policy,
)
from farm.session.genode_wire import (
    MAX_MESSAGE,
    WORD,
    Command,
    MessageDecoder,
    ProfileEvent,
    binary_header,
    description_xml,
    parse_profile,
    recv_exact,
    render_xml,
    word,
)

#: Genode event types with no farm counterpart, mapped to one that has.
_ALIASES = {"OUT_OF_CAPS": EventType.OUT_OF_QUOTA}


def admission_control(params: tuple[Any, ...]) -> Mapping[str, Any] | None:
    """The admission-control dict among the session parameters (None if absent)."""
    found = [p for p in params if p is not None]
    if not found:
        return None
    if len(found) > 1 or not isinstance(found[0], Mapping):
        raise ConfigError(
            "GenodeSession takes one session parameter, an admission-control dict like "
            f"{{'optimize': {{'goal': ..., 'query_interval': 1000}}}}; got {params!r}"
        )
    return found[0]


def genode_tasks(taskset: TaskSetLike, tasks: list[dict[str, Any]]) -> list[Any]:
    """What SEND_DESCS describes: the set's own ``genode_tasks`` if it has them, else ``tasks``.

    farm.compat's sets carry the originals' task dicts there, so that Genode is
    sent what taskgen and the MaLSAMi distributor sent (their priorities, caps, ...).
    """
    own = getattr(taskset, "genode_tasks", None)
    return list(own) if own is not None else tasks


class GenodeSession(AbstractSession):
    """Client of a Genode dom0 Taskloader (taskgen's GenodeSession, with error handling)."""

    default_port = 3001

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        connect_timeout: float = 10.0,
        connect_attempts: int | None = 1,
        connect_deadline: float = 60.0,
        io_timeout: float = 10.0,
        event_timeout: float | None = None,
        clear_on_close: bool = True,
        binaries_dir: str | Path | None = None,
        **options: Any,
    ) -> None:
        """Record the configuration.

        connect() dials at most ``connect_attempts`` times (None: until
        ``connect_deadline`` s) and checks the target echoes AVAILABLE.
        ``io_timeout`` bounds each send and each wait for GO_SEND; ``event_timeout``
        (off by default: Genode sends no heartbeats) makes run() raise
        SessionTimeout when the target has been silent that long. ``binaries_dir``:
        taskgen's ``bin/`` layout, ``<dir>/<pkg>`` is uploaded for each task's pkg.
        """
        super().__init__(host, port, **options)
        self.connect_timeout = connect_timeout
        self.connect_attempts = connect_attempts
        self.connect_deadline = connect_deadline
        self._closing = threading.Event()
        self.io_timeout = io_timeout
        self.event_timeout = event_timeout
        self.clear_on_close = clear_on_close
        self._sock: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._decoder = MessageDecoder()
        self._open_jobs: dict[int, deque[int]] = {}
        self._last_rx = 0.0
        self.binaries_dir = Path(binaries_dir) if binaries_dir else None
        self._sent: dict[str, str] = {}  # binaries the target holds: name -> sha256

    @classmethod
    def configured(
        cls,
        *,
        binaries_dir: str | Path | None = None,
        event_timeout: float | None = None,
    ) -> Callable[[str, int], AbstractSession]:
        """A (host, port) -> session builder for spawned guests.

        Dialling retries (no attempt limit) until the slot's boot deadline: a
        guest still booting refuses or drops connections for a while.
        """

        def build(host: str, port: int) -> AbstractSession:
            return cls(
                host,
                port,
                connect_attempts=None,
                event_timeout=event_timeout,
                binaries_dir=binaries_dir,
            )

        return build

    @classmethod
    def is_available(cls, host: str, port: int | None = None, timeout: float = 2.0) -> bool:
        """Send AVAILABLE and expect it echoed within ``timeout``."""
        try:
            with socket.create_connection((host, port or cls.default_port), timeout) as sock:
                sock.settimeout(timeout)
                sock.sendall(word(Command.AVAILABLE))
                answer = recv_exact(sock, WORD.size)
        except OSError:
            return False
        return bool(WORD.unpack(answer)[0] == Command.AVAILABLE)

    def connect(
        self, timeout: float | None = None, alive: Callable[[], bool] | None = None
    ) -> None:
        """Connect and check the Taskloader answers AVAILABLE, retrying; idempotent.

        ``timeout`` bounds the whole dialling (default ``connect_deadline``);
        ``alive`` is asked before each attempt (False: the target died, give up).
        """
        if self._closed:
            raise SessionError(f"{self!r} is closed")
        if self._sock is not None:
            return
        bound = self.connect_deadline if timeout is None else timeout
        retrying = retry_policy(
            attempts=self.connect_attempts,
            deadline=bound,
            wait=0.25,
            wait_max=3.0,
            interrupt=self._closing,
            logger=self.log,
        )
        try:
            sock = retrying(self._dial, time.monotonic() + bound, alive)
        except Unreachable as exc:
            raise SessionError(
                f"Genode target {self.host}:{self.port} unreachable "
                f"(gave up after {self.connect_attempts} attempts / {bound}s): {exc}"
            ) from exc
        sock.settimeout(self.io_timeout)
        self._sock = sock
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._last_rx = time.monotonic()
        self.log.info("connected")

    def _dial(self, deadline: float, alive: Callable[[], bool] | None) -> socket.socket:
        if self._closing.is_set():
            raise SessionError(f"{self!r} closed while connecting")
        if alive is not None and not alive():
            raise SessionError(f"target of {self!r} is gone (not alive) while connecting")
        timeout = max(0.05, min(self.connect_timeout, deadline - time.monotonic()))
        try:
            sock = socket.create_connection((self.host, self.port), timeout)
        except OSError as exc:
            raise Unreachable(exc) from exc
        try:
            sock.settimeout(timeout)
            sock.sendall(word(Command.AVAILABLE))
            (answer,) = WORD.unpack(recv_exact(sock, WORD.size))
        except OSError as exc:
            sock.close()
            raise Unreachable(exc) from exc
        if answer != Command.AVAILABLE:
            sock.close()
            raise ProtocolError(
                f"{self.host}:{self.port} answered AVAILABLE with {answer:#x}: not a Taskloader"
            )
        return sock

    # -- sending ---------------------------------------------------------------------

    def _send(self, *chunks: bytes) -> None:
        if self._sock is None:
            raise SessionError(f"{self!r} is not connected")
        try:
            self._sock.sendall(b"".join(chunks))
        except OSError as exc:
            raise SessionError(f"sending to {self.host}:{self.port} failed: {exc}") from exc

    def _send_document(self, command: Command, xml: str) -> None:
        try:
            data = xml.encode("ascii")
        except UnicodeEncodeError as exc:
            raise ConfigError(f"Genode takes ASCII XML only: {exc}") from exc
        self._send(word(command), word(len(data)), data)

    def _await_go(self) -> None:
        """Wait for GO_SEND; a stale profile of the previous set in between is skipped."""
        assert self._sock is not None
        while True:
            (value,) = WORD.unpack(self._recv(WORD.size))
            if value == Command.GO_SEND:
                return
            if value > MAX_MESSAGE:
                raise ProtocolError(f"expected GO_SEND (0x90) from Genode, got {value:#x}")
            payload = self._recv(value)
            try:
                stale = parse_profile(payload)
            except ProtocolError as exc:
                raise ProtocolError(f"expected GO_SEND (0x90) from Genode, got {value:#x}") from exc
            self.log.debug("skipped %d stale event(s) while waiting for GO_SEND", len(stale))

    def _recv(self, n: int) -> bytes:
        assert self._sock is not None
        try:
            data = recv_exact(self._sock, n)
        except TimeoutError as exc:
            raise SessionTimeout(
                f"Genode target {self.host}:{self.port} silent for {self.io_timeout}s"
            ) from exc
        except OSError as exc:
            raise SessionError(f"connection to {self.host}:{self.port} lost: {exc}") from exc
        self._last_rx = time.monotonic()
        return data

    def _drain(self) -> None:
        """Discard whatever the target pushed before now (events of the previous set)."""
        assert self._sock is not None and self._selector is not None
        dropped = 0
        while self._selector.select(0):
            try:
                data = self._sock.recv(1 << 16)
            except OSError as exc:
                raise SessionError(f"connection to {self.host}:{self.port} lost: {exc}") from exc
            if not data:
                raise SessionError(f"Genode target {self.host}:{self.port} closed the connection")
            dropped += len(data)
        self._decoder = MessageDecoder()
        if dropped:
            self.log.debug("discarded %d byte(s) pushed before start", dropped)

    # -- the session interface -------------------------------------------------------

    def start(self, taskset: TaskSetLike, *params: Any) -> None:
        """CLEAR, OPTIMIZE (admission dict), SEND_DESCS, SEND_BINARIES, START."""
        admctrl = admission_control(params)
        tasks = self._begin(taskset)
        binaries = {**self._package_binaries(tasks), **read_binaries(taskset)}
        headers = {name: binary_header(name, len(data)) for name, data in binaries.items()}
        descs = description_xml(genode_tasks(taskset, tasks))
        self.connect()
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in binaries.items()}
        binaries = {n: d for n, d in binaries.items() if self._sent.get(n) != digests[n]}
        self._drain()
        self._open_jobs = {}
        self._send(word(Command.CLEAR))
        if admctrl is not None:
            self._send_document(Command.OPTIMIZE, render_xml(admctrl))
        self._send_document(Command.SEND_DESCS, descs)
        self._send(word(Command.SEND_BINARIES), word(len(binaries)))
        for name, data in binaries.items():
            self._await_go()
            self._send(headers[name], data)
            self._sent[name] = digests[name]
            self.log.debug("sent binary %s (%d bytes)", name, len(data))
        self._send(word(Command.START))
        self.log.info("started %d task(s)", len(tasks))

    def _package_binaries(self, tasks: list[dict[str, Any]]) -> dict[str, bytes]:
        """``<binaries_dir>/<pkg>`` of every task whose pkg names a file there."""
        if self.binaries_dir is None:
            return {}
        out: dict[str, bytes] = {}
        for task in tasks:
            pkg = str(task.get("pkg", ""))
            path = self.binaries_dir / pkg
            if pkg in out or not pkg or "/" in pkg or pkg.startswith(".") or not path.is_file():
                continue
            try:
                out[pkg] = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"Genode binary {path} unreadable: {exc}") from exc
        return out

    def stop(self) -> None:
        """Send STOP (the target answers with no acknowledgement)."""
        if self._sock is not None:
            self._send(word(Command.STOP))

    def reboot_genode(self) -> None:
        """Send REBOOT and drop the connection; the next start() dials the target again.

        The target forgets its binaries when it reboots, so they are sent again.
        """
        if self._sock is None:
            raise SessionError(f"{self!r} is not connected")
        self.log.info("rebooting the Genode target")
        try:
            self._sock.sendall(word(Command.REBOOT))
        except OSError as exc:
            raise SessionError(f"sending REBOOT to {self.host}:{self.port} failed: {exc}") from exc
        finally:
            self._disconnect()
        self._sent.clear()

    def _receive(self, timeout: float) -> list[Event]:
        if self._sock is None or self._selector is None:
            raise SessionError(f"{self!r} is not connected")
        deadline = time.monotonic() + max(0.0, timeout)
        events: list[Event] = []
        while True:
            now = time.monotonic()
            wait = max(0.0, deadline - now)
            if self.event_timeout is not None:
                silent_until = self._last_rx + self.event_timeout
                if now >= silent_until:
                    raise SessionTimeout(
                        f"Genode target {self.host}:{self.port} silent for "
                        f"{now - self._last_rx:.1f}s (event timeout {self.event_timeout}s)"
                    )
                wait = min(wait, silent_until - now)
            if not self._selector.select(wait):
                if events or time.monotonic() >= deadline:
                    return events
                continue
            try:
                data = self._sock.recv(1 << 16)
            except OSError as exc:
                raise SessionError(f"connection to {self.host}:{self.port} lost: {exc}") from exc
            if not data:
                raise SessionError(f"Genode target {self.host}:{self.port} closed the connection")
            self._last_rx = time.monotonic()
            for payload in self._decoder.feed(data):
                events.extend(self._convert(e) for e in parse_profile(payload))
            if events:
                return events

    def _convert(self, raw: ProfileEvent) -> Event:
        task_id, kind, stamp = raw
        timestamp = stamp / 1000.0
        if kind in _ALIASES:
            event_type: EventType | None = _ALIASES[kind]
        else:
            event_type = EventType.__members__.get(kind)
        if event_type is None or event_type is EventType.NOTICE:
            return Event(task_id, None, EventType.NOTICE, timestamp, f"genode event {kind}")
        detail = kind if kind in _ALIASES else None
        extra = {"genode_type": kind} if detail else {}
        open_jobs = self._open_jobs.setdefault(task_id, deque())
        job: int | None
        if event_type is EventType.START:
            job = self.progress.next_job(task_id)
            open_jobs.append(job)
        elif event_type is EventType.NOT_SCHEDULED:
            job = self.progress.next_job(task_id)
        elif event_type in EXIT_TYPES:
            job = open_jobs.popleft() if open_jobs else self.progress.next_job(task_id)
        else:
            job = None
        return Event(task_id, job, event_type, timestamp, detail, extra)

    def _disconnect(self, clear: bool = False) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if clear:
            try:
                sock.sendall(word(Command.CLEAR))
            except OSError:
                pass
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        self._decoder = MessageDecoder()
        sock.close()

    def _close(self) -> None:
        self._closing.set()
        self._disconnect(clear=self.clear_on_close)
        self.log.debug("closed")
