"""farm.session.dial: staggered dialling of a booting agent.

The fake "slirp" below accepts every connection at once; the first ones stay
silent (their SYN went to a guest whose network was not up yet), later ones
get a greeting. A single connection with a long wait (the old way) hangs on
the first one until its budget is spent.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from farm.agent import protocol
from farm.qemu import free_port
from farm.session.dial import connect_greeted
from farm.session.wire import handshake

TOKEN = "dial-token"


def greet(conn: socket.socket) -> None:
    conn.sendall(b"hi")


def agent_handshake(conn: socket.socket) -> None:
    """The agent's side of the greeting, for TOKEN (no guest name)."""
    conn.settimeout(5)
    raw = protocol.dumps(protocol.hello(protocol.new_nonce(), 1.0, "v"))
    conn.sendall(len(raw).to_bytes(4, "big") + raw)
    auth = protocol.read_frame(conn, protocol.PREAUTH_MAX_FRAME)
    secret = protocol.session_secret(TOKEN, raw, auth["cnonce"])
    protocol.write_frame(conn, {"type": "welcome", "mac": protocol.proof(secret, "agent")})


@contextlib.contextmanager
def slirp_like(
    silent: int, answer: Callable[[socket.socket], None] = greet
) -> Iterator[tuple[int, list[socket.socket]]]:
    """A listener whose first ``silent`` connections never hear a byte; later ones: ``answer``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            if len(held) > silent:
                with contextlib.suppress(OSError):
                    answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], held
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in held:
            conn.close()


def test_silent_first_connections_do_not_hold_up_the_greeting() -> None:
    with slirp_like(silent=2) as (port, held):
        sock = connect_greeted("127.0.0.1", port, timeout=30.0, stagger=0.02)
        with sock:
            sock.settimeout(5)
            assert sock.recv(16) == b"hi"
        assert len(held) >= 3  # it needed a third connection: the first two stayed silent


def test_more_silent_connections_than_max_open_are_replaced() -> None:
    with slirp_like(silent=6) as (port, held):
        sock = connect_greeted("127.0.0.1", port, timeout=30.0, stagger=0.01, max_open=2)
        with sock:
            sock.settimeout(5)
            assert sock.recv(16) == b"hi"
        assert len(held) >= 7


def test_a_connection_closed_before_a_byte_ends_the_call() -> None:
    """The guest's kernel answered (its network is up): the caller retries, as before."""
    with (
        slirp_like(silent=0, answer=lambda conn: conn.close()) as (port, _),
        pytest.raises(ConnectionResetError),
    ):
        connect_greeted("127.0.0.1", port, timeout=30.0)


def test_nobody_greets_is_a_timeout() -> None:
    with slirp_like(silent=10**6) as (port, _), pytest.raises(TimeoutError):
        connect_greeted("127.0.0.1", port, timeout=0.3, stagger=0.05)


def test_a_refusal_ends_the_call_at_once() -> None:
    with pytest.raises(ConnectionRefusedError):
        connect_greeted("127.0.0.1", free_port(), timeout=30.0)


def test_handshake_survives_a_silent_first_connection() -> None:
    """wire.handshake (FarmSession's dial attempt) is not stuck on a connection slirp holds."""
    with slirp_like(silent=1, answer=agent_handshake) as (port, held):
        channel = handshake("127.0.0.1", port, TOKEN, timeout=20.0)
        channel.sock.close()
        assert channel.hello["agent_version"] == "v"
        assert len(held) >= 2
