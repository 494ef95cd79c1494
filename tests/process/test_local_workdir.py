"""A local agent's work directory lives under farm's state and goes with the agent.

The agent keeps a ``--workdir`` at exit, and one killed by SIGKILL (a chaos test,
farm's own death) cannot clean a temporary directory of its own: without farm
removing it, every killed local agent left a ``/tmp/farm-agent-*`` behind.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from farm.backend.local import WORKDIR_SUFFIX, LocalBackend
from farm.config import FarmConfig
from farm.errors import BackendError
from farm.session import FarmSession
from farm.tasksets.example import Hey0TaskSet
from tests.helpers import wait_for
from tests.process.conftest import AgentProcess

TOKEN = "w" * 8 + os.urandom(16).hex()


def config(tmp_path: Path) -> FarmConfig:
    return FarmConfig(
        backend="local", state_dir=tmp_path / "state", log_dir=tmp_path / "log", token=TOKEN
    )


def test_a_killed_local_agents_work_directory_is_removed_by_destroy(tmp_path: Path) -> None:
    backend = LocalBackend(config(tmp_path))
    workdir = tmp_path / "state" / "local" / f"local1{WORKDIR_SUFFIX}"
    guest = backend.spawn("local1", TOKEN)
    try:
        assert guest.pid is not None
        argv = psutil.Process(guest.pid).cmdline()
        assert argv[argv.index("--workdir") + 1] == str(workdir)  # not a /tmp dir of its own
        host, port = guest.address(30.0)
        with FarmSession(host, port, token=TOKEN, guest="local1") as session:
            session.start(next(Hey0TaskSet().variants()))
            for _ in range(60):
                if session.finished():
                    break
                session.run(1.0)
            assert session.finished()
        assert (workdir / "jobs").is_dir()  # the set ran in it
        os.kill(guest.pid, signal.SIGKILL)
        wait_for("the agent's death", lambda: not guest.alive(), timeout=10)
        assert workdir.is_dir()  # nobody cleaned it: the agent was killed
    finally:
        guest.destroy()
        backend.close()
    assert not workdir.exists()


def test_reap_stale_removes_a_dead_farms_work_directories(tmp_path: Path) -> None:
    """The next farm's start-up (Distributor calls reap_stale) removes what a farm that
    died left: its agents are reaped, their work directories no live agent owns go."""
    cfg = config(tmp_path)
    stale = cfg.state_dir / "local" / f"local7{WORKDIR_SUFFIX}"
    (stale / "jobs").mkdir(parents=True)  # a dead farm's agent's
    backend = LocalBackend(cfg)
    try:
        backend.reap_stale()
        assert not stale.exists()
        guest = backend.spawn("local7", TOKEN)  # the name is free to use again
        try:
            guest.address(30.0)
        finally:
            guest.destroy()
    finally:
        backend.close()


def test_a_test_agent_killed_by_sigkill_leaves_nothing_in_tmp(
    agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    """The process tier's own agents (agent_factory) work under the test's tmp_path too:
    the tests that kill them left a /tmp/farm-agent-* each."""
    before = set(Path(tempfile.gettempdir()).glob("farm-agent-*"))
    agent = agent_factory()
    argv = psutil.Process(agent.proc.pid).cmdline()
    assert Path(argv[argv.index("--workdir") + 1]).is_relative_to(tmp_path)
    client = agent.connect()  # a set makes the agent's work tree: its jobs run in it
    client.run_taskset([{"id": 0, "pkg": "hey", "numberofjobs": 1}])
    client.close()
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(10)
    assert set(Path(tempfile.gettempdir()).glob("farm-agent-*")) <= before


class _BrokenPipe:
    """The key pipe of an agent that died at once: writing fails with EPIPE."""

    def __init__(self, fd: int, mode: str) -> None:
        self._fd = fd

    def __enter__(self) -> _BrokenPipe:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def test_an_agent_whose_key_cannot_be_written_is_killed_and_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Popen succeeded but the key did not go down the pipe: the agent (its process group)
    is killed and reaped, not left running outside the registry; the key is in no message."""
    backend = LocalBackend(config(tmp_path))
    started: list[subprocess.Popen[bytes]] = []

    class Recorded(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[call-overload]
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    monkeypatch.setattr(os, "fdopen", _BrokenPipe)
    try:
        with pytest.raises(BackendError, match="Broken pipe") as err:
            backend.spawn("local3", TOKEN)
        monkeypatch.undo()
        assert len(started) == 1
        agent = started[0]
        assert agent.returncode is not None  # killed and reaped: no stray, no zombie
        assert backend.registry.entries() == {}
        assert TOKEN not in str(err.value)
    finally:
        monkeypatch.undo()
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        backend.close()
