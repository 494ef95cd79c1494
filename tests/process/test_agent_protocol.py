"""The agent's handshake, authentication, requests and connection handling (real agent)."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import pytest

from farm.agent import protocol
from tests.process.conftest import AgentProcess, ReplyError


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _read_until_closed(
    sock: socket.socket, timeout: float = 10.0, channel: protocol.Channel | None = None
) -> list[dict[str, Any]]:
    """All frames the agent sends until it closes the connection (sealed: ``channel``)."""
    sock.settimeout(timeout)
    frames = []
    while True:
        try:
            frames.append(protocol.read_frame(sock) if channel is None else channel.recv())
        except (ConnectionError, OSError):
            return frames


def test_handshake_and_basic_ops(agent: AgentProcess) -> None:
    client = agent.connect()
    assert client.hello["protocol"] == protocol.PROTOCOL_VERSION
    assert client.hello["agent_version"] == protocol.agent_version()
    assert client.hello["pid"] == agent.proc.pid
    before = time.monotonic()
    ts = client.call("ping")["ts"]
    assert isinstance(ts, float)
    clock = client.call("time")
    assert clock["monotonic"] >= before  # same host: same monotonic clock
    assert abs(clock["wall"] - time.time()) < 60
    status = client.call("status")
    assert status["running"] is False
    assert status["clients"] == 1
    assert status["agent_version"] == protocol.agent_version()
    out = agent.stdout.read_text()
    assert (
        out == f"farm-agent listening on 127.0.0.1:{agent.port} version {status['agent_version']}\n"
    )


def test_wrong_token_is_refused_and_nothing_can_be_done(agent: AgentProcess) -> None:
    with pytest.raises(PermissionError):
        agent.connect(token="not-the-token")
    sock = agent.raw_socket()
    hello = protocol.read_raw(sock)
    bad_mac = protocol.proof(protocol.session_secret("wrong", hello, "c"), "client")
    protocol.write_frame(
        sock, {"type": "auth", "protocol": protocol.PROTOCOL_VERSION, "mac": bad_mac, "cnonce": "c"}
    )
    try:
        protocol.write_frame(
            sock,
            {
                "type": "request",
                "id": 1,
                "op": "start",
                "args": {"tasks": [{"id": 0, "pkg": "hey"}]},
            },
        )
    except OSError:
        pass  # the agent may already have closed
    frames = _read_until_closed(sock)
    assert frames[0] == {"type": "error", "code": "auth", "message": "authentication failed"}
    assert all(f["type"] == "error" for f in frames)
    sock.close()
    status = agent.connect().call("status")
    assert status["running"] is False and status["tasks"] == []


@pytest.mark.parametrize(
    "auth",
    [
        {"type": "request", "id": 1, "op": "ping", "args": {}},  # no auth at all
        {"type": "auth", "protocol": 1, "cnonce": "c"},  # no mac
        {"type": "auth", "protocol": 1, "mac": 12345, "cnonce": "c"},  # mac of wrong type
        {"type": "auth", "protocol": 1, "mac": None, "cnonce": "c"},
        {"type": "auth", "mac": "00" * 32, "cnonce": "c"},  # no protocol
    ],
)
def test_missing_or_invalid_auth(agent: AgentProcess, auth: dict[str, Any]) -> None:
    with agent.raw_socket() as sock:
        protocol.read_frame(sock)
        protocol.write_frame(sock, auth)
        frames = _read_until_closed(sock)
    assert len(frames) == 1 and frames[0]["type"] == "error"
    assert frames[0]["code"] in ("auth", "protocol")


def test_valid_mac_without_cnonce_is_refused(agent: AgentProcess) -> None:
    with agent.raw_socket() as sock:
        hello = protocol.read_raw(sock)
        mac = protocol.proof(protocol.session_secret(agent.token, hello, "c"), "client")
        protocol.write_frame(
            sock, {"type": "auth", "protocol": protocol.PROTOCOL_VERSION, "mac": mac}
        )
        frames = _read_until_closed(sock)
    assert [f["code"] for f in frames] == ["auth"]


def test_protocol_version_mismatch_names_both(agent: AgentProcess) -> None:
    with agent.raw_socket() as sock:
        hello = protocol.read_raw(sock)
        mac = protocol.proof(protocol.session_secret(agent.token, hello, "c"), "client")
        protocol.write_frame(sock, {"type": "auth", "protocol": 1, "mac": mac, "cnonce": "c"})
        frames = _read_until_closed(sock)
    assert [f["code"] for f in frames] == ["protocol"]
    assert "protocol 1" in frames[0]["message"]
    assert f"speaks {protocol.PROTOCOL_VERSION}" in frames[0]["message"]


def test_auth_must_arrive_in_time(agent_factory: Any) -> None:
    agent = agent_factory("--auth-timeout", "0.5")
    with agent.raw_socket() as sock:
        protocol.read_frame(sock)
        sock.sendall(b"\x00\x00")  # half a header, then silence
        frames = _read_until_closed(sock, timeout=10)
    assert [f["code"] for f in frames] == ["auth"]
    agent.connect().call("ping")


def test_oversized_frame_before_auth_closes(agent: AgentProcess) -> None:
    with agent.raw_socket() as sock:
        protocol.read_frame(sock)
        sock.sendall(struct.pack(">I", 10 * 1024 * 1024))
        frames = _read_until_closed(sock)
    assert [f["code"] for f in frames] == ["auth"]


def test_request_errors_keep_the_connection(agent: AgentProcess) -> None:
    client = agent.connect()
    with pytest.raises(ReplyError) as err:
        client.call("no-such-op")
    assert err.value.code == "unknown_op"
    client.send({"type": "request", "id": 5, "op": 7})
    assert client.read()["error"]["code"] == "bad_request"
    client.send({"type": "request", "id": 6, "op": "ping", "args": [1]})
    assert client.read() == protocol.error("bad_request", "args must be an object", 6)
    client.send({"type": "request", "op": "ping"})
    frame = client.read()
    assert frame["type"] == "error" and frame["code"] == "bad_request"
    assert client.channel is not None
    client.sock.sendall(client.channel.sender.seal(b"{not json"))
    assert client.read()["code"] == "bad_frame"
    client.sock.sendall(client.channel.sender.seal(b"[" * 100_000 + b"]" * 100_000))
    assert client.read()["code"] == "bad_frame"
    client.send({"type": "mystery"})
    assert client.read()["code"] == "bad_request"
    with pytest.raises(ReplyError) as err:
        client.call("stop")
    assert err.value.code == "not_running"
    assert "ts" in client.call("ping")


def test_oversized_frame_after_auth_closes_only_that_connection(agent: AgentProcess) -> None:
    victim, bystander = agent.connect(), agent.connect()
    victim.sock.sendall(struct.pack(">I", protocol.MAX_FRAME + protocol.TAG_LEN + 1))
    frames = _read_until_closed(victim.sock, channel=victim.channel)
    assert [f.get("code") for f in frames if f["type"] == "error"] == ["bad_frame"]
    assert "ts" in bystander.call("ping")


def test_heartbeats(agent_factory: Any) -> None:
    agent = agent_factory("--heartbeat", "0.1")
    client = agent.connect()
    beats: list[float] = []
    while len(beats) < 3:
        frame = client.read(timeout=10)
        assert frame["type"] == "heartbeat"
        beats.append(frame["ts"])
    assert beats == sorted(beats)


def test_connection_cap(agent_factory: Any) -> None:
    agent = agent_factory("--max-connections", "1")
    first = agent.connect()  # authenticated: the one slot is taken
    with agent.raw_socket() as third:
        frames = _read_until_closed(third)
    assert [f["code"] for f in frames] == ["busy"]
    first.close()
    deadline = time.monotonic() + 10
    while True:  # the agent notices the closed socket asynchronously
        try:
            agent.connect().call("ping")
            break
        except (PermissionError, ConnectionError, protocol.ProtocolViolation, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
