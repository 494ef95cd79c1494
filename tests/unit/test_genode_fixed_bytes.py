"""GenodeSession against hand-written bytes of one Taskloader exchange (no shared codec).

The fake dom0 and GenodeSession share farm.session.genode_wire, so a codec bug common to
both cannot show in their tests. Here the target side is a tiny socket server that only
compares raw bytes with literals written out by hand from the protocol as taskgen spoke
it (taskgen/sessions/genode.py: ``struct.pack('I', ...)`` words, little-endian on its
hosts; the binary header ``'15scI'``; profiles as a uint32 length then ASCII XML) and as
farm's docstrings document it (AVAILABLE probe, compact XML).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from farm.events import Event, EventType
from farm.session.genode import GenodeSession

pytestmark = pytest.mark.unit

# command words, little-endian uint32, written out byte by byte
AVAILABLE = b"\xaa\xaa\x0a\x00"  # 0x000AAAAA
CLEAR = b"\xe6\x0d\x00\x00"  # 0x00000DE6
SEND_DESCS = b"\xe5\x0d\x00\x00"  # 0x00000DE5
SEND_BINARIES = b"\x1e\xf1\xe5\x0d"  # 0x0DE5F11E
GO_SEND = b"\x90\x00\x00\x00"  # 0x00000090
START = b"\xe5\x4d\x51\x00"  # 0x00514DE5
STOP = b"\xe6\x4d\x51\x00"  # 0x00514DE6
OPTIMIZE = b"\x74\x70\x6f\x00"  # 0x006F7074 ("tpo")

ADMCTRL = {"optimize": {"goal": "fairness", "query_interval": 1000}}
OPTIMIZE_XML = b"<optimize><goal>fairness</goal><query_interval>1000</query_interval></optimize>"
DESCS_XML = (
    b"<taskset><periodictask><id>1</id><pkg>hey</pkg><period>100</period>"
    b"<numberofjobs>1</numberofjobs></periodictask></taskset>"
)
BINARY = b"\x7fELF-not-really-a-binary\n"
# '15scI': the name NUL-padded to 15 bytes, one NUL, the size (25 = 0x19)
BINARY_HEADER = b"hey" + b"\x00" * 12 + b"\x00" + b"\x19\x00\x00\x00"
PROFILE = (  # two overlapping jobs: an exit closes the task's oldest open job
    b'<profile><events><event task-id="1" type="START" time-stamp="10"/>'
    b'<event task-id="1" type="START" time-stamp="20"/>'
    b'<event task-id="1" type="EXIT" time-stamp="25"/>'
    b'<event task-id="1" type="EXIT" time-stamp="30"/></events></profile>\x00\x00'
)
PROFILE_LEN = b"\xe8\x00\x00\x00"  # 232


class Variant:
    """A task set as a session sees it: description() and binaries()."""

    def description(self) -> dict[str, Any]:
        return {"tasks": [{"id": 1, "pkg": "hey", "period": 100, "numberofjobs": 1}]}

    def binaries(self) -> dict[str, bytes]:
        return {"hey": BINARY}


class ScriptedTarget(threading.Thread):
    """Plays the target's side of one exchange; ``expect`` reads exactly the literal bytes."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.steps: list[str] = []
        self.error: str | None = None
        self.release_profile = threading.Event()

    def run(self) -> None:
        try:
            conn, _ = self.server.accept()
            with conn:
                conn.settimeout(10)
                self.play(conn)
        except Exception as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"
        finally:
            self.server.close()

    def expect(self, conn: socket.socket, what: str, data: bytes) -> None:
        got = b""
        while len(got) < len(data):
            chunk = conn.recv(len(data) - len(got))
            if not chunk:
                break
            got += chunk
        if got != data:
            self.error = f"{what}: expected {data!r}, got {got!r}"
            raise AssertionError(self.error)
        self.steps.append(what)

    def play(self, conn: socket.socket) -> None:
        self.expect(conn, "AVAILABLE", AVAILABLE)
        conn.sendall(AVAILABLE)
        self.expect(conn, "CLEAR", CLEAR)
        self.expect(conn, "OPTIMIZE", OPTIMIZE + len(OPTIMIZE_XML).to_bytes(4, "little"))
        self.expect(conn, "optimize xml", OPTIMIZE_XML)
        self.expect(conn, "SEND_DESCS", SEND_DESCS + b"\x7a\x00\x00\x00")  # 122 bytes
        self.expect(conn, "descs xml", DESCS_XML)
        self.expect(conn, "SEND_BINARIES 1", SEND_BINARIES + b"\x01\x00\x00\x00")
        conn.sendall(GO_SEND)
        self.expect(conn, "binary header", BINARY_HEADER)
        self.expect(conn, "binary", BINARY)
        self.expect(conn, "START", START)
        self.release_profile.wait(10)
        # the profile arrives split in two reads
        conn.sendall(PROFILE_LEN + PROFILE[:30])
        conn.sendall(PROFILE[30:])
        self.expect(conn, "STOP", STOP)
        self.expect(conn, "CLEAR on close", CLEAR)
        if conn.recv(1) != b"":
            self.error = "bytes after the final CLEAR"


def test_literal_lengths_are_right() -> None:
    """The hand-written lengths match the hand-written documents (guards the test itself)."""
    assert len(DESCS_XML) == 0x7A and len(PROFILE) == 0xE8 and len(BINARY) == 0x19
    assert len(BINARY_HEADER) == 20


def test_one_exchange_matches_the_taskloader_bytes() -> None:
    target = ScriptedTarget()
    target.start()
    events: list[Event] = []
    failure: Exception | None = None
    try:
        with GenodeSession("127.0.0.1", target.port, io_timeout=5.0) as session:
            session.start(Variant(), ADMCTRL)
            target.release_profile.set()
            for _ in range(50):
                events += session.run(0.2)
                if len(events) >= 4 or target.error:
                    break
            session.stop()
    except Exception as exc:  # the target hung up on a wrong byte: report which one
        failure = exc
    finally:
        target.release_profile.set()
        target.join(10)
    assert target.error is None, f"{target.error} (after {target.steps})"
    assert failure is None
    assert target.steps[-1] == "CLEAR on close"
    assert events == [
        Event(1, 0, EventType.START, 0.010),
        Event(1, 1, EventType.START, 0.020),
        Event(1, 0, EventType.EXIT, 0.025),
        Event(1, 1, EventType.EXIT, 0.030),
    ]
