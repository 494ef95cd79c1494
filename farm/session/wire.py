"""The host side of the agent's handshake: one dial attempt, bounded, mapped to farm errors.

Kept apart from :mod:`farm.session.agent` (requests, events, heartbeats): this
is the part that touches keys. Every read here is bounded by an overall
deadline, however slowly the peer trickles its bytes, and before the
handshake is done no frame above ``PREAUTH_MAX_FRAME`` (4 KiB) is accepted.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from farm.agent.protocol import (
    MAX_FRAME,
    PREAUTH_MAX_FRAME,
    TAG_LEN,
    AgentBusy,
    Channel,
    FrameDecoder,
    ProtocolViolation,
    agent_version,
    check_hello,
    client_handshake,
    read_frame,
)
from farm.errors import AuthError, ProtocolError, SessionError
from farm.session.base import Unreachable
from farm.session.dial import connect_greeted


class AgentVersionMismatch(SessionError):
    """The agent runs other code than this farm (e.g. a stale guest image)."""

    def __init__(self, local: str, remote: object) -> None:
        super().__init__(
            f"agent version {remote!r} does not match farm's agent version {local!r} "
            "(rebuild the guest image, or pass check_version=False)"
        )
        self.local = local
        self.remote = remote


#: the first dial attempt's wait for connect + greeting (see FarmSession.attempt_timeout)
FIRST_ATTEMPT_TIMEOUT = 0.3


def check_version(hello: dict[str, Any], expected: str | None = None) -> None:
    """AgentVersionMismatch unless the hello's agent version is ``expected`` (default: ours)."""
    local = expected or agent_version()
    remote = hello.get("agent_version")
    if remote != local:
        raise AgentVersionMismatch(local, remote)


def handshake(
    host: str, port: int, token: str, timeout: float, guest: str | None = None
) -> Channel:
    """Connect and authenticate within ``timeout`` seconds in all; return the channel.

    Raises Unreachable (retryable: refused, timed out, closed, busy), AuthError
    (a key was refused either way, or the agent is another guest) or
    ProtocolError (not a farm agent of our protocol version).
    """
    deadline = time.monotonic() + timeout
    try:  # staggered connections: a booting guest's first ones may hang (farm.session.dial)
        sock = connect_greeted(host, port, timeout)
        sock.settimeout(max(0.01, deadline - time.monotonic()))
    except OSError as exc:
        raise Unreachable(exc) from exc
    try:
        return client_handshake(sock, token, deadline, guest)
    except PermissionError as exc:
        sock.close()
        raise AuthError(f"agent at {host}:{port}: authentication failed: {exc}") from exc
    except ProtocolViolation as exc:
        sock.close()
        raise ProtocolError(f"agent at {host}:{port}: {exc}") from exc
    except AgentBusy as exc:
        sock.close()
        raise Unreachable(exc) from exc
    except OSError as exc:  # includes timeouts and "closed by peer" while booting
        sock.close()
        raise Unreachable(exc) from exc
    except BaseException:
        sock.close()
        raise


def greets(host: str, port: int, timeout: float) -> bool:
    """True if a farm agent of our protocol greets us within ``timeout`` s in all."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            check_hello(read_frame(sock, PREAUTH_MAX_FRAME, deadline))
    except (OSError, ProtocolViolation):
        return False
    return True


def pump(
    channel: Channel,
    closing: threading.Event,
    heard: Callable[[], None],
    dispatch: Callable[[dict[str, Any]], None],
    where: str,
) -> SessionError | ProtocolError | None:
    """Read and check frames until ``closing``; return why the connection ended (None: closed).

    ``heard`` is called for every chunk received (heartbeat clock), ``dispatch`` for
    every verified message. A frame whose MAC fails ends the session (ProtocolError).
    """
    decoder = FrameDecoder(MAX_FRAME + TAG_LEN, opener=channel.receiver)
    try:
        while not closing.is_set():
            try:
                data = channel.sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError("agent closed the connection")
            heard()
            for message in decoder.feed(data):
                dispatch(message)
    except ProtocolViolation as exc:
        return ProtocolError(f"agent at {where} broke the protocol: {exc}")
    except OSError as exc:
        return SessionError(f"connection to agent at {where} lost: {exc}")
    return None
