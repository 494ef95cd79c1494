"""The agent's ops without sockets (error paths and bookkeeping; nothing is spawned)."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from farm.agent import commands, protocol
from farm.agent.binaries import BadBinary, BinaryStore
from farm.agent.service import AgentService, RequestError
from farm.agent.taskspec import parse_task


class FakeClient:
    """Collects what the service sends."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.fixture
def service(tmp_path: Path) -> AgentService:
    return AgentService(tmp_path)


def error_code(service: AgentService, op: str, **args: Any) -> str:
    with pytest.raises(RequestError) as err:
        service.handle(FakeClient(), op, args)
    return err.value.code


def test_ping_time_status(service: AgentService) -> None:
    client = FakeClient()
    service.attach(client)
    assert isinstance(service.handle(client, "ping", {}).result["ts"], float)
    clock = service.handle(client, "time", {}).result
    assert set(clock) == {"monotonic", "monotonic_ns", "wall"}
    status = service.handle(client, "status", {}).result
    assert status["running"] is False and status["clients"] == 1
    assert status["agent_version"] == protocol.agent_version() == service.version
    service.detach(client)
    assert service.handle(client, "status", {}).result["clients"] == 0
    assert service.ops == {
        *("ping", "time", "status", "start", "stop", "clear"),
        *("exec", "exec_poll", "exec_kill", "exec_forget"),
    }


def test_errors(service: AgentService) -> None:
    assert error_code(service, "reboot") == "unknown_op"
    assert error_code(service, "stop") == "not_running"
    assert error_code(service, "start") == "invalid_taskset"
    assert error_code(service, "start", tasks=[{"id": 0, "pkg": "nope"}]) == "invalid_taskset"
    ok = [{"id": 0, "pkg": "hey"}]
    assert error_code(service, "start", tasks=ok, params="x") == "bad_request"
    assert error_code(service, "start", tasks=ok, at="soon") == "bad_request"
    assert error_code(service, "start", tasks=ok, at=float("nan")) == "bad_request"
    assert error_code(service, "start", tasks=ok, binaries={"a b": "AA=="}) == "bad_request"
    status = service.handle(FakeClient(), "status", {}).result
    assert status["running"] is False and status["binaries"] == []


def test_invalid_taskset_does_not_keep_its_binaries(service: AgentService) -> None:
    binaries = {"tool": base64.b64encode(b"#!/bin/sh\n").decode()}
    bad = [{"id": 0, "pkg": "tool", "priority": 500}]
    assert error_code(service, "start", tasks=bad, binaries=binaries) == "invalid_taskset"
    assert service.handle(FakeClient(), "status", {}).result["binaries"] == []


def test_clear_when_idle(service: AgentService) -> None:
    assert service.handle(FakeClient(), "clear", {}).result == {"cleared": True, "stopped": False}


def test_binary_store(tmp_path: Path) -> None:
    store = BinaryStore(tmp_path / "bin")
    decoded = store.decode_all({"tool": base64.b64encode(b"#!/bin/sh\necho\n").decode()})
    path = store.put("tool", decoded["tool"])
    assert path.read_bytes() == b"#!/bin/sh\necho\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "bin").stat().st_mode) == 0o700
    assert store.names() == {"tool"}
    store.clear()
    assert store.names() == frozenset() and not path.exists()
    for bad in ({".hidden": ""}, {"a/b": ""}, {"x" * 65: ""}, {"ok": "%%%"}, {"ok": 1}, [1]):
        with pytest.raises(BadBinary):
            store.decode_all(bad)
    assert store.decode_all(None) == {}


def test_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from farm.agent import sched

    monkeypatch.setenv("FARM_TOKEN", "secret")
    plan = sched.SchedPlan()
    shell = parse_task({"id": 1, "pkg": "shell", "config": {"command": "echo"}}, 0)
    launch = commands.build_launch(shell, 2, plan, {}, tmp_path)
    assert launch.argv == ["/bin/sh", "-c", "echo"] and not launch.builtin
    assert "FARM_TOKEN" not in launch.env
    assert (launch.env["FARM_TASK_ID"], launch.env["FARM_JOB"]) == ("1", "2")
    pi = parse_task({"id": 1, "pkg": "pi", "quota": 100, "executiontime": 250}, 0)
    launch = commands.build_launch(pi, 0, plan, {}, tmp_path)
    assert launch.argv[-3:] == ["pi", "digits=100", "100"] and launch.builtin
    assert launch.budget_s == 0.25 and launch.cwd == str(tmp_path)
    tool = parse_task(
        {"id": 1, "pkg": "tool", "config": {"a": "x y", "b": 2, "c": True}}, 0, {"tool"}
    )
    launch = commands.build_launch(tool, 0, plan, {"tool": tmp_path / "tool"}, tmp_path)
    assert launch.argv == [str(tmp_path / "tool"), "x y", "2", "true"]
    assert commands.binary_args({"args": [1, "a"], "b": 2}) == ["1", "a"]
    assert os.environ["FARM_TOKEN"] == "secret"


def test_version_recorded_by_the_image_is_used_without_rehashing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The guest's /init passes the version the image build computed (saves ~7M instructions)."""
    monkeypatch.setenv("FARM_AGENT_VERSION", "built-1234")
    monkeypatch.setattr(protocol, "agent_version", lambda: pytest.fail("re-hashed the sources"))
    assert AgentService(workdir=tmp_path).version == "built-1234"
    monkeypatch.delenv("FARM_AGENT_VERSION")
    monkeypatch.undo()
    assert AgentService(workdir=tmp_path).version == protocol.agent_version()  # host agents
