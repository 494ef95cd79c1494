"""1,000 malformed frames at a real agent; it must answer or hang up, and keep working."""

from __future__ import annotations

import json
import random
import socket
import struct
from collections.abc import Iterator
from typing import Any

from farm.agent import protocol
from tests.process.conftest import AgentClient, AgentProcess

SEED = 20261123
FRESH = 300  # frames on unauthenticated connections
AUTHED = 700  # frames on authenticated connections
WEIRD: list[Any] = [
    None, True, False, 0, -1, 2**70, -(2**63), 1e308, -0.0, 1.5, "", "x" * 5000, "\u0000",
    "ping", [], {}, [[[[]]]], {"a": {"b": {"c": []}}}, [None] * 50,
]  # fmt: skip
OPS = ["ping", "time", "status", "start", "stop", "nope", "", "PING", "start "]
TASK_KEYS = ["id", "pkg", "config", "priority", "period", "executiontime", "criticaltime",
             "deadline", "offset", "numberofjobs", "quota"]  # fmt: skip


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def jframe(obj: Any) -> bytes:
    return frame(json.dumps(obj).encode())


def bad_task(rng: random.Random) -> Any:
    """A task that is always invalid (unknown pkg or a wrong type somewhere)."""
    if rng.random() < 0.2:
        return rng.choice(WEIRD)
    task = {key: rng.choice(WEIRD) for key in rng.sample(TASK_KEYS, rng.randint(0, 6))}
    task["pkg"] = rng.choice([f"no-such-pkg-{rng.randint(0, 99)}", 5, None, ["hey"]])
    return task


def request(rng: random.Random) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "request"}
    if rng.random() < 0.85:
        msg["id"] = rng.choice([rng.randint(0, 10**6), f"r{rng.randint(0, 99)}", *WEIRD])
    if rng.random() < 0.9:
        msg["op"] = rng.choice(OPS + WEIRD)
    if rng.random() < 0.8:
        args: Any = rng.choice(WEIRD)
        if rng.random() < 0.6:
            args = {
                "tasks": rng.choice([[bad_task(rng) for _ in range(rng.randint(0, 3))], *WEIRD]),
                "binaries": rng.choice([{"../x": "AAAA"}, {"ok": "!!"}, None, *WEIRD]),
                "params": rng.choice(WEIRD),
                "at": rng.choice([-1e300, 1e300, float("inf"), "soon", None]),
            }
        msg["args"] = args
    return msg


def garbage(rng: random.Random) -> tuple[str, bytes]:
    """(kind, bytes); kinds 'stream-breaking' cannot be followed on the same connection."""
    kind = rng.choice(
        ["random", "random-frame", "text", "non-object", "no-type", "request", "request",
         "request", "huge-number", "deep", "bad-utf8", "oversized", "truncated"]
    )  # fmt: skip
    if kind == "random":
        return kind, rng.randbytes(rng.randint(1, 64))
    if kind == "random-frame":
        return kind, frame(rng.randbytes(rng.randint(0, 200)))
    if kind == "text":
        text = rng.choice(['{"type": ', "nope", "{'type': 'request'}", '{"type":"request",}', ""])
        return kind, frame(text.encode())
    if kind == "non-object":
        return kind, jframe(rng.choice([[], 1, "request", None, 1.5, True, [{"type": "x"}]]))
    if kind == "no-type":
        return kind, jframe(rng.choice([{}, {"id": 1}, {"type": 5}, {"type": None}, {"type": []}]))
    if kind == "request":
        return kind, jframe(request(rng))
    if kind == "huge-number":
        digits = b"9" * rng.choice([400, 5000, 50_000])
        return kind, frame(b'{"type":"request","id":' + digits + b',"op":"ping"}')
    if kind == "deep":
        depth = rng.choice([500, 5000, 100_000])
        return kind, frame(b'{"type":"request","id":1,"op":"ping","args":' + b"[" * depth)
    if kind == "bad-utf8":
        return kind, frame(b'{"type":"\xff\xfe"}')
    if kind == "oversized":
        return kind, struct.pack(">I", rng.choice([protocol.MAX_FRAME + 1, 0xFFFFFFFF]))
    return kind, struct.pack(">I", 1000) + b'{"type":"re'  # truncated


STREAM_BREAKING = {"random", "oversized", "truncated"}


def drain_until_closed(sock: socket.socket) -> list[dict[str, Any]]:
    sock.settimeout(15)
    frames = []
    while True:
        try:
            frames.append(protocol.read_frame(sock))
        except protocol.ProtocolViolation as exc:
            raise AssertionError(f"agent sent a malformed frame: {exc}") from exc
        except (ConnectionError, OSError):
            return frames


def send_and_hang_up(sock: socket.socket, data: bytes) -> list[dict[str, Any]]:
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the agent may have hung up first
    return drain_until_closed(sock)


def probe(client: AgentClient, n: int) -> list[dict[str, Any]]:
    """Ping after a frame; return what came before the pong (the frame's answers)."""
    rid = f"probe-{n}"
    client.send({"type": "request", "id": rid, "op": "ping"})
    before: list[dict[str, Any]] = []
    while True:
        frame_ = client.read(timeout=15)
        if frame_["type"] == "reply" and frame_.get("id") == rid:
            assert frame_["ok"], frame_
            return before
        if frame_["type"] != "heartbeat":
            before.append(frame_)


def fuzz_frames(rng: random.Random, n: int) -> Iterator[tuple[str, bytes]]:
    for _ in range(n):
        yield garbage(rng)


def test_malformed_frames_never_stop_the_agent(agent: AgentProcess) -> None:
    rng = random.Random(SEED)
    answers: list[dict[str, Any]] = []
    for _kind, data in fuzz_frames(rng, FRESH):
        with agent.raw_socket() as sock:
            assert protocol.read_frame(sock)["type"] == "hello"
            frames = send_and_hang_up(sock, data)
        assert all(f["type"] == "error" and f["code"] in ("auth", "protocol") for f in frames)
        assert len(frames) <= 1
    client = agent.connect()
    for n, (kind, data) in enumerate(fuzz_frames(rng, AUTHED)):
        if kind in STREAM_BREAKING:
            victim = agent.connect()
            answers += send_and_hang_up(victim.sock, data)
            victim.close()
            continue
        client.sock.sendall(data)
        answers += probe(client, n)
    for a in answers:
        assert a["type"] in ("error", "reply"), a
        if a["type"] == "error":
            assert a["code"] in ("bad_frame", "bad_request"), a
        elif not a["ok"]:
            assert a["error"]["code"] != "internal", a
    assert agent.proc.poll() is None
    assert "Traceback" not in agent.log_text()
    # the agent still does real work, for old and new clients alike
    assert client.call("status")["running"] is False
    fresh = agent.connect()
    tasks = [
        {"id": 1, "pkg": "hey", "numberofjobs": 2},
        {"id": 2, "pkg": "shell", "config": {"command": "echo still alive"}},
    ]
    events = fresh.run_taskset(tasks)
    done = [e["task_id"] for e in events if e["type"] == "JOBS_DONE"]
    assert sorted(done) == [1, 2]
    assert [e["type"] for e in events if e["type"].startswith("EXIT")] == ["EXIT"] * 3
