"""The QMP client against a fake QMP server: events are never taken for replies."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.qemu.qmp import QmpClient, QmpError, connect

Script = Callable[[socket.socket, Any], None]


def send(conn: socket.socket, *msgs: dict[str, Any]) -> None:
    conn.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in msgs))


def event(name: str, **data: Any) -> dict[str, Any]:
    return {"event": name, "data": data, "timestamp": {"seconds": 1, "microseconds": 2}}


GREETING = {"QMP": {"version": {"qemu": {"major": 8}}, "capabilities": []}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[[Script], Path]]:
    """``server(script)``: a unix socket whose one client is handled by ``script(conn, reader)``."""
    threads: list[threading.Thread] = []
    socks: list[socket.socket] = []

    def start(script: Script) -> Path:
        path = tmp_path / f"qmp{len(socks)}.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.listen(1)
        socks.append(listener)

        def run() -> None:
            conn, _ = listener.accept()
            with conn, conn.makefile("rb") as reader:
                send(conn, GREETING)
                assert json.loads(reader.readline()) == {"execute": "qmp_capabilities"}
                send(conn, {"return": {}})
                script(conn, reader)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    for s in socks:
        s.close()
    for t in threads:
        t.join(5)


def test_events_before_the_reply_are_queued_not_returned(server: Any) -> None:
    def script(conn: socket.socket, reader: Any) -> None:
        request = json.loads(reader.readline())
        assert request == {"execute": "query-status"}
        send(conn, event("RTC_CHANGE", offset=1), event("STOP"))
        send(conn, {"return": {"status": "paused"}})
        request = json.loads(reader.readline())
        assert request == {"execute": "migrate", "arguments": {"uri": "fd:x"}}
        send(conn, {"return": {}}, event("MIGRATION", status="active"))
        send(conn, event("MIGRATION", status="completed"))
        reader.readline()

    with connect(server(script), timeout=5) as qmp:
        assert qmp.greeting["QMP"]["version"]["qemu"]["major"] == 8
        assert qmp.execute("query-status") == {"status": "paused"}
        assert qmp.execute("migrate", uri="fd:x") == {}
        done = qmp.wait_event("MIGRATION", 5, lambda d: d.get("status") == "completed")
        assert done["data"] == {"status": "completed"}
        names = [e["event"] for e in qmp.events()]
        assert names == ["RTC_CHANGE", "STOP", "MIGRATION"]  # the active one stayed queued
        assert qmp.events() == []


def test_error_reply_raises_with_class_and_description(server: Any) -> None:
    def script(conn: socket.socket, reader: Any) -> None:
        reader.readline()
        send(conn, event("X"), {"error": {"class": "GenericError", "desc": "no such thing"}})
        reader.readline()

    with connect(server(script), timeout=5) as qmp:
        with pytest.raises(QmpError, match="GenericError: no such thing"):
            qmp.execute("bogus")
        assert [e["event"] for e in qmp.events()] == ["X"]


def test_event_queue_is_bounded(server: Any) -> None:
    def script(conn: socket.socket, reader: Any) -> None:
        reader.readline()
        send(conn, *[event("E", n=n) for n in range(10)], {"return": {}})
        reader.readline()

    path = server(script)
    with QmpClient(path, timeout=5, max_events=4).connect() as qmp:
        qmp.execute("query-status")
        assert [e["data"]["n"] for e in qmp.events()] == [6, 7, 8, 9]


def test_timeout_and_closed_socket_raise_qmperror(server: Any) -> None:
    gate = threading.Event()

    def silent(conn: socket.socket, reader: Any) -> None:
        reader.readline()
        send(conn, event("ONLY_AN_EVENT"))
        gate.wait(10)

    with connect(server(silent), timeout=0.3) as qmp:
        with pytest.raises(QmpError, match="within"):
            qmp.execute("query-status")
        with pytest.raises(QmpError, match="no QMP event SHUTDOWN"):
            qmp.wait_event("SHUTDOWN", 0.2)
    gate.set()

    def hangup(conn: socket.socket, reader: Any) -> None:
        reader.readline()

    with connect(server(hangup), timeout=5) as qmp:
        with pytest.raises(QmpError, match="closed"):
            qmp.execute("quit")
        qmp.close()
        qmp.close()  # idempotent
        with pytest.raises(QmpError, match="closed"):
            qmp.execute("quit")


def test_no_server_and_bad_greeting(tmp_path: Path) -> None:
    with pytest.raises(QmpError, match="cannot connect"):
        connect(tmp_path / "none.sock", timeout=0.2)
    with pytest.raises(QmpError, match="exited"):
        QmpClient(tmp_path / "none.sock").connect(5, alive=lambda: False)
    path = tmp_path / "bad.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b'{"return": {}}\n')

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    with pytest.raises(QmpError, match="greeting"):
        connect(path, timeout=5)
    thread.join(5)
    listener.close()
