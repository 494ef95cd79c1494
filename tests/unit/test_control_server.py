"""Control socket: ControlServer + ControlClient on a fake distributor and a FakeBackend farm."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm import Distributor
from farm.backend.fake import FakeBackend, session_class_for
from farm.config import FarmConfig
from farm.control import ControlClient, ControlError, NoFarmRunning
from farm.control.server import ControlServer, socket_alive
from farm.control.sockpath import MAX_SUN_PATH, socket_path
from farm.taskset import Task, TaskSet


class FakeDist:
    """Fake distributor: just what the control server reads."""

    def __init__(self, state_dir: Path, backend: Any = None, network: str = "user") -> None:
        self.config = FarmConfig(state_dir=state_dir, network=network)
        self._backend = backend
        self.limit = 3

    def get_max_machine_value(self) -> int:
        return self.limit

    def machines(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "qemu1",
                "state": "ready",
                "address": "127.0.0.1:4000",
                "current": "job#0",
                "uptime": 1.5,
                "restarts": 0,
                "sets_done": 2,
                "retiring": False,
            }
        ]

    def jobs(self) -> list[dict[str, Any]]:
        return [{"job": 1, "name": "Hey0TaskSet", "total": 4, "finished": 2, "done": False}]

    def backend_kind(self) -> str:
        return getattr(self._backend, "kind", "")

    def backend_status(self) -> list[dict[str, Any]]:
        return self._backend.status() if self._backend is not None else []


class FakeHostsBackend:
    """Fake multi-host backend with a status() method."""

    kind = "fakehosts"

    def status(self) -> list[dict[str, Any]]:
        return [{"host": "hv1", "uri": "qemu+ssh://hv1/system", "machines": 2, "up": True}]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    srv = ControlServer(FakeDist(tmp_path / "state"))
    assert srv.start()
    try:
        yield srv
    finally:
        srv.close()


def test_status_has_the_contract_fields(server: ControlServer, tmp_path: Path) -> None:
    doc = ControlClient(socket_path(tmp_path / "state")).status()
    assert doc["pid"] == os.getpid() and doc["limit"] == 3
    assert doc["started"] == pytest.approx(server.started)
    (m,) = doc["machines"]
    assert {k: m[k] for k in ("name", "state", "address", "current", "restarts")} == {
        "name": "qemu1",
        "state": "ready",
        "address": "127.0.0.1:4000",
        "current": "job#0",
        "restarts": 0,
    }
    assert doc["jobs"][0]["total"] == 4
    assert doc["leases"] == [] and doc["hosts"] == []


def test_socket_is_private_and_removed_on_close(tmp_path: Path) -> None:
    srv = ControlServer(FakeDist(tmp_path / "state"))
    assert srv.start()
    mode = os.stat(srv.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    thread = srv._thread
    srv.close()
    assert thread is not None and not thread.is_alive()
    assert not srv.path.exists()
    srv.close()  # idempotent


def test_no_socket_is_a_clear_farm_error(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with pytest.raises(NoFarmRunning, match=f"no farm running here: {path} not found"):
        ControlClient(path).status()
    assert not ControlClient(path).ping()


def test_stale_socket_is_detected_and_replaced(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(socket_path(state)))
    dead.close()  # the file stays, nobody listens: a farm that died
    with pytest.raises(NoFarmRunning, match="gone"):
        ControlClient(socket_path(state)).status()
    srv = ControlServer(FakeDist(state))
    try:
        assert srv.start()
        assert ControlClient(socket_path(state)).status()["limit"] == 3
    finally:
        srv.close()


def test_a_live_farms_socket_is_left_alone(server: ControlServer, tmp_path: Path) -> None:
    second = ControlServer(FakeDist(tmp_path / "state"))
    assert not second.start()
    second.close()
    assert socket_alive(server.path)  # the first farm still answers


def test_long_state_dir_paths_work(tmp_path: Path) -> None:
    state = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(socket_path(state))) > MAX_SUN_PATH
    srv = ControlServer(FakeDist(state))
    try:
        assert srv.start()
        assert srv.path.exists()
        assert ControlClient(srv.path).status()["limit"] == 3
    finally:
        srv.close()
    assert not srv.path.exists()


def test_backend_status_is_reported_as_hosts(tmp_path: Path) -> None:
    srv = ControlServer(FakeDist(tmp_path / "state", backend=FakeHostsBackend()))
    assert srv.start()
    try:
        doc = ControlClient(srv.path).status()
    finally:
        srv.close()
    assert doc["hosts"] == FakeHostsBackend().status()
    assert doc["backend"] == "fakehosts"


def raw(path: Path, data: bytes) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


def test_bad_requests_get_errors_and_the_server_keeps_serving(server: ControlServer) -> None:
    replies = raw(server.path, b'not json\n{"op": "kill"}\n{"op": "ping"}\n')
    assert replies[0] == {"ok": False, "error": "request is not JSON"}
    assert not replies[1]["ok"] and "unknown op" in replies[1]["error"]
    assert replies[2]["ok"]
    with pytest.raises(ControlError, match="unknown op"):
        ControlClient(server.path).request("set_max_machine_value")
    assert ControlClient(server.path).ping()


def test_a_silent_client_does_not_block_close(tmp_path: Path) -> None:
    srv = ControlServer(FakeDist(tmp_path / "state"))
    assert srv.start()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(srv.path))  # connects and says nothing
    try:
        closer = threading.Thread(target=srv.close)
        closer.start()
        closer.join(30)
        assert not closer.is_alive()
    finally:
        s.close()


def test_distributor_serves_status_and_removes_socket_on_close(tmp_path: Path) -> None:
    backend = FakeBackend()
    config = FarmConfig(state_dir=tmp_path / "state", log_dir=tmp_path / "log", idle_linger=30.0)
    dist = Distributor(config, backend=backend, session_class=session_class_for(backend))
    path = socket_path(tmp_path / "state")
    try:
        dist.add_job(TaskSet([Task({"pkg": "hey", "x-run": range(50)})]), None)
        dist.set_max_machine_value(2)
        client = ControlClient(path)
        deadline = time.monotonic() + 30
        while len(client.status()["machines"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        doc = client.status()
        assert sorted(m["name"] for m in doc["machines"]) == ["qemu1", "qemu2"]
        assert doc["limit"] == 2 and len(doc["jobs"]) == 1
    finally:
        dist.close()
    assert not path.exists()
    with pytest.raises(NoFarmRunning):
        ControlClient(path).status()
