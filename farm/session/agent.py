"""FarmSession: the host side of the farm agent protocol (farm.agent.protocol).

One TCP connection per session. connect() dials with bounded tenacity retries
(a TCG guest needs seconds to boot), runs the keyed handshake
(:mod:`farm.session.wire`) and checks the agent's version; every later frame is
sealed and checked (protocol.Channel). A reader thread then routes every incoming frame: replies to
the request waiting for that id, events into a queue that run() drains,
heartbeats just refresh the "last heard" clock. If nothing at all arrives for
``heartbeat_timeout`` seconds, run() and requests raise SessionTimeout: that
is how a hung guest is detected. A lost connection raises SessionError once
the events received before it have been handed out.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from farm.agent.protocol import DEFAULT_PORT, Channel, ProtocolViolation
from farm.errors import AgentError, ConfigError, ProtocolError, SessionError, SessionTimeout
from farm.events import Event
from farm.session.base import (
    AbstractSession,
    TaskSetLike,
    Unreachable,
    read_binaries,
    retry_policy,
    task_descriptions,
)
from farm.session.token import resolve_token
from farm.session.wire import (
    FIRST_ATTEMPT_TIMEOUT,
    AgentVersionMismatch,
    check_version,
    greets,
    handshake,
    pump,
)

__all__ = ["FIRST_ATTEMPT_TIMEOUT", "AgentVersionMismatch", "FarmSession"]

_NO_REPLY = object()


class FarmSession(AbstractSession):
    """Client of a farm agent: framed JSON, HMAC handshake, request ids, heartbeats."""

    default_port = DEFAULT_PORT

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        token: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        connect_timeout: float = 5.0,
        connect_attempts: int | None = 30,
        connect_deadline: float = 60.0,
        retry_wait: float = 0.25,
        retry_wait_max: float = 3.0,
        io_timeout: float = 30.0,
        request_timeout: float = 30.0,
        heartbeat_timeout: float | None = None,
        check_version: bool = True,
        expected_version: str | None = None,
        guest: str | None = None,
        **options: Any,
    ) -> None:
        """Record the configuration (nothing is resolved or dialled here).

        ``connect_attempts``/``connect_deadline`` bound the dialling (whichever
        comes first); ``heartbeat_timeout`` defaults to 3 heartbeat intervals + 2 s
        as announced by the agent's hello. ``guest``: the guest name the agent must
        announce (None: any; its key is derived from the token and the name it gives).
        """
        super().__init__(host, port, **options)
        self._token = token
        self._state_dir = state_dir
        self.connect_timeout = connect_timeout
        self._attempt = 0  # dial attempts of the current connect(): sets their timeout
        self.connect_attempts = connect_attempts
        self.connect_deadline = connect_deadline
        self.retry_wait = retry_wait
        self.retry_wait_max = retry_wait_max
        self.io_timeout = io_timeout
        self.request_timeout = request_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.check_version = check_version
        self.expected_version = expected_version
        self.guest = guest
        self.hello: dict[str, Any] | None = None
        self._sock: socket.socket | None = None
        self._channel: Channel | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._closing = threading.Event()
        self._events: deque[Event] = deque()
        self._replies: dict[int, object] = {}
        self._ids = itertools.count(1)
        self._error: SessionError | ProtocolError | None = None
        self._last_rx = 0.0

    @classmethod
    def factory(
        cls, *, token: str, heartbeat_timeout: float
    ) -> Callable[[str, int], AbstractSession]:
        """Sessions to booting guests: the farm's token, and keep dialling until it answers."""

        def build(host: str, port: int) -> AbstractSession:
            return cls(
                host,
                port,
                token=token,
                heartbeat_timeout=heartbeat_timeout,
                connect_attempts=100_000,
                retry_wait=0.02,
                retry_wait_max=0.05,  # a booting guest: notice its agent within 50 ms
            )

        return build

    # -- availability ----------------------------------------------------------------

    @classmethod
    def is_available(cls, host: str, port: int | None = None, timeout: float = 2.0) -> bool:
        """True if a farm agent greets us at host:port within ``timeout`` in all (no token)."""
        return greets(host, port or DEFAULT_PORT, timeout)

    # -- connection ------------------------------------------------------------------

    def connect(
        self, timeout: float | None = None, alive: Callable[[], bool] | None = None
    ) -> None:
        """Dial (with retries), authenticate and check the agent version; idempotent.

        ``timeout`` bounds the whole dialling (default ``connect_deadline``);
        ``alive`` is asked before each attempt (False: the guest died, give up).
        Raises SessionError (unreachable, guest gone, version mismatch),
        AuthError (token refused either way) or ProtocolError (not a farm agent).
        """
        if self._closed:
            raise SessionError(f"{self!r} is closed")
        if self._sock is not None:
            return
        token = resolve_token(self._token, self._state_dir)
        self._attempt = 0
        bound = self.connect_deadline if timeout is None else timeout
        deadline = time.monotonic() + bound
        retrying = retry_policy(
            attempts=self.connect_attempts,
            deadline=bound,
            wait=self.retry_wait,
            wait_max=self.retry_wait_max,
            interrupt=self._closing,
            logger=self.log,
        )
        try:
            channel = retrying(self._dial, token, deadline, alive)
        except Unreachable as exc:
            raise SessionError(
                f"agent at {self.host}:{self.port} unreachable "
                f"(gave up after {self.connect_attempts} attempts / {bound}s): {exc}"
            ) from exc
        if self._closing.is_set():
            channel.sock.close()
            raise SessionError(f"{self!r} closed while connecting")
        self._adopt(channel)

    def _dial(self, token: str, deadline: float, alive: Callable[[], bool] | None) -> Channel:
        if self._closing.is_set():
            raise SessionError(f"{self!r} closed while connecting")
        if alive is not None and not alive():
            raise SessionError(f"target of {self!r} is gone (not alive) while connecting")
        timeout = max(0.05, min(self.attempt_timeout(self._attempt), deadline - time.monotonic()))
        self._attempt += 1
        channel = handshake(self.host, self.port, token, timeout, self.guest)
        try:
            self._check_version(channel.hello)
        except BaseException:
            channel.sock.close()
            raise
        return channel

    def attempt_timeout(self, attempt: int) -> float:
        """How long dial attempt ``attempt`` (0-based) waits for connect + greeting.

        Short first, growing 25 % an attempt up to ``connect_timeout``: QEMU's
        user-mode network accepts the connection before the guest's NIC is up and
        then holds it silently, so a long first wait would cost a booting guest
        the whole ``connect_timeout`` (measured: ready after 5.1 s instead of 2.1 s).
        """
        return min(self.connect_timeout, FIRST_ATTEMPT_TIMEOUT * 1.25**attempt)

    def _check_version(self, hello: dict[str, Any]) -> None:
        if self.check_version:
            check_version(hello, self.expected_version)

    def _adopt(self, channel: Channel) -> None:
        sock, hello = channel.sock, channel.hello
        self.hello = hello
        self._channel = channel
        if self.heartbeat_timeout is None:
            interval = hello.get("heartbeat")
            if isinstance(interval, int | float) and interval > 0:
                self.heartbeat_timeout = 3.0 * float(interval) + 2.0
            else:
                self.heartbeat_timeout = 30.0
        sock.settimeout(self.io_timeout)
        self._sock = sock
        self._last_rx = time.monotonic()
        self._reader = threading.Thread(
            target=self._read_loop, args=(channel,), name=f"farm-session-{self.host}:{self.port}"
        )
        self._reader.daemon = True
        self._reader.start()
        self.log.info("connected, agent %s", hello.get("agent_version"))

    # -- reader thread ---------------------------------------------------------------

    def _read_loop(self, channel: Channel) -> None:
        def heard() -> None:
            with self._cond:
                self._last_rx = time.monotonic()

        try:
            reason = pump(channel, self._closing, heard, self._dispatch, f"{self.host}:{self.port}")
        except Exception as exc:  # never let the reader die silently
            self.log.exception("reader thread failed")
            reason = SessionError(f"reader of {self!r} failed: {exc}")
        if reason is not None and not self._closing.is_set():
            self._fail(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "event":
            try:
                event = Event.from_wire(message.get("event"))
            except ProtocolError as exc:
                self.log.warning("dropping malformed event: %s", exc)
                return
            with self._cond:
                self._events.append(event)
                self._cond.notify_all()
        elif kind == "reply":
            with self._cond:
                request_id = message.get("id")
                if request_id in self._replies:
                    self._replies[request_id] = message
                    self._cond.notify_all()
                else:
                    self.log.warning("reply to unknown request %r", request_id)
        elif kind == "heartbeat":
            pass  # _last_rx was refreshed by the read itself
        elif kind == "error":
            self._fail(
                AgentError(
                    f"agent at {self.host}:{self.port}: {message.get('message')}",
                    code=str(message.get("code", "error")),
                )
            )
        else:
            self.log.debug("ignoring message of type %r", kind)

    def interrupt(self, reason: str = "interrupted") -> None:
        """Make a waiting run()/request raise SessionError now (e.g. its machine was killed)."""
        self._fail(SessionError(f"{self!r}: {reason}"), logging.INFO)  # the caller says why

    def _fail(self, reason: SessionError | ProtocolError, level: int = logging.WARNING) -> None:
        with self._cond:
            if self._error is None:
                self._error = reason
                self.log.log(level, "%s", reason)
            self._cond.notify_all()

    # -- requests --------------------------------------------------------------------

    def call(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Send request ``op`` and wait for its reply; return the reply's result.

        Raises AgentError (error reply, with its ``code``), SessionTimeout (no reply
        in ``timeout`` s, default ``request_timeout``, or agent silent) or SessionError.
        """
        self.connect()
        sock, channel = self._sock, self._channel
        if sock is None or channel is None:
            raise SessionError(f"{self!r} is closed")
        with self._cond:
            self._raise_if_failed()
            request_id = next(self._ids)
        message = {"type": "request", "id": request_id, "op": op, "args": args or {}}
        with self._cond:
            self._replies[request_id] = _NO_REPLY
        try:
            with self._send_lock:  # sealed in sending order: the tags count frames
                try:
                    frame = channel.encode(message)
                except (TypeError, ValueError) as exc:
                    raise ConfigError(
                        f"arguments of {op!r} are not JSON-serialisable: {exc}"
                    ) from exc
                except ProtocolViolation as exc:
                    raise ConfigError(f"request {op!r} too large: {exc}") from exc
                sock.sendall(frame)
        except ConfigError:
            with self._cond:
                self._replies.pop(request_id, None)
            raise
        except OSError as exc:
            with self._cond:
                self._replies.pop(request_id, None)
            self._fail(SessionError(f"sending {op!r} to {self.host}:{self.port} failed: {exc}"))
            self._raise_if_failed()
        reply = self._wait_reply(
            op, request_id, self.request_timeout if timeout is None else timeout
        )
        if not reply.get("ok"):
            error = reply.get("error")
            if not isinstance(error, dict):
                error = {}
            raise AgentError(
                f"agent refused {op!r}: {error.get('message', 'no message')}",
                code=str(error.get("code", "error")),
            )
        return reply.get("result")

    def request(self, op: str, /, **args: Any) -> Any:
        """Generic request: ``session.request("ping")``; see call() for errors."""
        return self.call(op, args)

    def _wait_reply(self, op: str, request_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            try:
                while True:
                    reply = self._replies[request_id]
                    if reply is not _NO_REPLY:
                        assert isinstance(reply, dict)
                        return reply
                    self._raise_if_failed()
                    now = time.monotonic()
                    self._check_heartbeat(now)
                    if now >= deadline:
                        raise SessionTimeout(
                            f"agent at {self.host}:{self.port} did not answer {op!r} "
                            f"within {timeout}s"
                        )
                    assert self.heartbeat_timeout is not None
                    self._cond.wait(min(deadline, self._last_rx + self.heartbeat_timeout) - now)
            finally:
                self._replies.pop(request_id, None)

    def _raise_if_failed(self) -> None:
        if self._closed:
            raise SessionError(f"{self!r} is closed")
        if self._error is not None:
            raise self._error

    def _check_heartbeat(self, now: float) -> None:
        assert self.heartbeat_timeout is not None
        silent = now - self._last_rx
        if silent >= self.heartbeat_timeout:
            raise SessionTimeout(
                f"agent at {self.host}:{self.port} silent for {silent:.1f}s "
                f"(heartbeat timeout {self.heartbeat_timeout}s): guest hung or unreachable"
            )

    # -- the session interface -------------------------------------------------------

    def start(self, taskset: TaskSetLike, *params: Any) -> None:
        """Send the task set, its binaries (base64) and the session parameters; start it."""
        tasks = task_descriptions(taskset)
        binaries = {
            name: base64.b64encode(data).decode("ascii")
            for name, data in read_binaries(taskset).items()
        }
        self.connect()
        with self._cond:
            if self._events:
                self.log.debug("discarding %d event(s) of the previous set", len(self._events))
                self._events.clear()
        self._begin(taskset)
        self.call("start", {"tasks": tasks, "binaries": binaries, "params": list(params)})

    def stop(self) -> None:
        """Stop the running set and wait for the agent to confirm."""
        if self._sock is None:
            return
        self.call("stop")

    def ping(self) -> float:
        """Round-trip time of a ping request, in seconds."""
        began = time.perf_counter()
        self.call("ping")
        return time.perf_counter() - began

    def status(self) -> Any:
        """The agent's status reply (what it runs, its version, ...)."""
        return self.call("status")

    def _receive(self, timeout: float) -> list[Event]:
        if self._sock is None:
            raise SessionError(f"{self!r} is not connected")
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                if self._events:
                    events = list(self._events)
                    self._events.clear()
                    return events
                self._raise_if_failed()
                now = time.monotonic()
                self._check_heartbeat(now)
                if now >= deadline:
                    return []
                assert self.heartbeat_timeout is not None
                self._cond.wait(min(deadline, self._last_rx + self.heartbeat_timeout) - now)

    def _close(self) -> None:
        self._closing.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(self.io_timeout + 1.0)
            if self._reader.is_alive():
                self.log.error("reader thread did not stop")
        if sock is not None:
            sock.close()
        with self._cond:
            self._cond.notify_all()
        self.log.debug("closed")
