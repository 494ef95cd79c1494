"""The agent's connection writes a reply or event from the sending thread when it can.

No hop to the writer thread for a frame that nothing waits before (a ping's
reply, a set's JOBS_DONE); a client that does not read makes frames queue for
the writer instead of blocking the sender, and every frame still arrives
sealed in sending order (the tags count frames).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from farm.agent import protocol
from farm.agent.connection import IO_TIMEOUT, Connection

pytestmark = pytest.mark.unit

SECRET = b"s" * 32


def _pair() -> tuple[Connection, socket.socket, protocol.FrameDecoder]:
    """An authenticated connection (keys set, writable directly) and the client's end."""
    agent_end, client_end = socket.socketpair()
    conn = Connection(agent_end, "peer:1", None, "token", 0.0, 1.0, lambda _c: None)  # type: ignore[arg-type]
    conn._sender, conn._receiver = protocol.directions(SECRET, agent=True)
    agent_end.settimeout(IO_TIMEOUT)
    conn._fd = agent_end.fileno()  # what run() sets once the writer runs
    _, opener = protocol.directions(SECRET, agent=False)
    return conn, client_end, protocol.FrameDecoder(opener=opener)


def _read(client: socket.socket, decoder: protocol.FrameDecoder, n: int) -> list[dict[str, Any]]:
    client.settimeout(10)
    got: list[dict[str, Any]] = []
    while len(got) < n:
        data = client.recv(1 << 20)
        assert data, "connection closed"
        got += decoder.feed(data)
    return got


def test_a_reply_goes_out_from_the_sending_thread() -> None:
    conn, client, decoder = _pair()
    try:
        assert conn._writer is None  # no writer thread at all: the frame must not wait for one
        conn.send(protocol.reply(7, {"pong": True}))
        conn.send({"type": "event", "event": {"type": "JOBS_DONE"}})
        got = _read(client, decoder, 2)
        assert got[0] == protocol.reply(7, {"pong": True})
        assert got[1]["event"]["type"] == "JOBS_DONE"
        assert conn._queue.empty()
    finally:
        client.close()
        conn._sock.close()


def test_a_client_not_reading_queues_frames_in_order_without_blocking_the_sender() -> None:
    conn, client, decoder = _pair()
    big = "x" * 60_000
    try:
        sent = 0
        while conn._queue.empty():  # until the socket is full: the rest waits for the writer
            conn.send({"type": "event", "n": sent, "pad": big})
            sent += 1
            assert sent < 10_000, "the socket never filled"
        for _ in range(5):  # queued behind the backlog, not written past it
            conn.send({"type": "event", "n": sent, "pad": big})
            sent += 1
        assert conn._queue.qsize() == 6
        writer = threading.Thread(target=conn._write_loop, daemon=True)
        writer.start()
        got = _read(client, decoder, sent)  # BadTag here if a frame overtook another
        assert [m["n"] for m in got] == list(range(sent))
        conn.close_gracefully()
        writer.join(10)
        assert not writer.is_alive()
        assert conn._backlog == 0
    finally:
        client.close()
        conn._sock.close()


class _CountingSocket:
    """The agent's end of a socketpair, counting recv calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def settimeout(self, t: float | None) -> None:
        self.sock.settimeout(t)


def test_frames_that_arrived_together_cost_one_recv() -> None:
    conn, client, _ = _pair()
    counting = _CountingSocket(conn._sock)  # type: ignore[arg-type]
    conn._sock = counting  # type: ignore[assignment]
    sender, _ = protocol.directions(SECRET, agent=False)
    requests = [{"type": "request", "id": i, "op": "ping", "args": {}} for i in range(3)]
    try:
        client.sendall(b"".join(sender.seal(protocol.dumps(r)) for r in requests))
        got = [conn._read_frame(protocol.MAX_FRAME + protocol.TAG_LEN, None) for _ in requests]
        assert got == requests
        assert counting.recvs == 1  # header and body of all three: one read
    finally:
        client.close()
        counting.sock.close()


def test_before_auth_no_byte_beyond_the_frame_is_read() -> None:
    conn, client, _ = _pair()
    conn._receiver = None  # (the handshake's frames are unsealed)
    try:
        client.sendall(protocol.encode({"type": "auth"}) + b"\0\0\0\x05rest!")
        assert conn._read_frame(protocol.PREAUTH_MAX_FRAME, None) == {"type": "auth"}
        assert not conn._rbuf
    finally:
        client.close()
        conn._sock.close()


class _Service:
    version = "test"


def test_a_client_is_counted_as_authenticated_before_it_reads_its_welcome() -> None:
    """Else its next connection could slip past the agent's cap (max_connections)."""
    agent_end, client_end = socket.socketpair()
    conn = Connection(agent_end, "peer:1", _Service(), "token", 0.0, 5.0, lambda _c: None)  # type: ignore[arg-type]
    result: list[bool] = []
    agent = threading.Thread(target=lambda: result.append(conn._handshake()), daemon=True)
    agent.start()
    try:
        client_end.settimeout(10)
        protocol.client_handshake(client_end, "token")  # returns once the welcome is read
        assert conn.authenticated
        agent.join(10)
        assert result == [True]
    finally:
        client_end.close()
        agent_end.close()


def test_after_the_connection_ends_a_late_send_writes_to_no_fd() -> None:
    """A scheduler's late send() must not write to the closed socket's fd number,
    which the kernel may already have given to another file or client."""
    conn, client, _decoder = _pair()
    client.close()
    conn._on_close = lambda _c: None
    conn._finish()  # what run() does at its end: the socket is closed
    assert conn._fd == -1
    other_r, other_w = socket.socketpair()  # likely reuses the freed fd number
    try:
        conn._closed.clear()  # a send that passed its closed check just before the end
        conn.send({"type": "event", "event": {"type": "EXIT"}})
        other_r.setblocking(False)
        with pytest.raises(BlockingIOError):
            other_r.recv(1)  # nothing reached the new owner of the number
    finally:
        other_r.close()
        other_w.close()
