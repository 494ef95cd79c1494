"""``python -m farm.agent`` as a program: token sources, port file, signals, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.process.conftest import REPO, AgentProcess


def _env_without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FARM_TOKEN"}


def test_no_token_no_service(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    result = subprocess.run(
        [sys.executable, "-m", "farm.agent", "--port", "0", "--port-file", str(port_file)],
        cwd=REPO,
        env=_env_without_token(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "no token" in result.stderr
    assert result.stdout == ""
    assert not port_file.exists()


def test_empty_token_file_is_no_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    result = subprocess.run(
        [sys.executable, "-m", "farm.agent", "--port", "0", "--token-file", str(token_file)],
        cwd=REPO,
        env=_env_without_token(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "no token" in result.stderr


def test_token_from_environment(agent_factory: Any) -> None:
    agent = agent_factory(token="from-env", env={"FARM_TOKEN": "from-env"}, token_flag=False)
    assert "ts" in agent.connect().call("ping")


def test_token_from_file(agent_factory: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    agent = agent_factory(
        "--token-file", str(token_file), token="from-file", env={"FARM_TOKEN": "other"},
        token_flag=False,
    )  # fmt: skip
    assert "ts" in agent.connect().call("ping")


def test_port_file_and_listening_line(agent: AgentProcess, tmp_path: Path) -> None:
    port_file = next(tmp_path.glob("agent*/agent.port"))
    assert port_file.read_text() == f"{agent.port}\n"
    line = agent.stdout.read_text()
    assert line.startswith(f"farm-agent listening on 127.0.0.1:{agent.port} version 1.")
    assert line.count("\n") == 1


def test_sigint_stops_jobs_and_exits_zero(agent: AgentProcess) -> None:
    client = agent.connect()
    client.call("start", tasks=[{"id": 0, "pkg": "shell", "config": {"command": "sleep 60"}}])
    client.collect(lambda evs: any(e["type"] == "START" for e in evs))
    jobs = agent.children()
    assert jobs
    agent.proc.send_signal(signal.SIGINT)
    assert agent.proc.wait(15) == 0
    assert not [p for p in jobs if p.is_running() and p.status() != "zombie"]
    with pytest.raises(ConnectionError):  # read what was sent, up to the close
        client.collect(lambda evs: False, timeout=10)
    assert [e["type"] for e in client.events] == ["START", "EXIT_EXTERNAL"]


def test_port_in_use_exits_one(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "farm.agent", "--port", str(port), "--token", "t"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
