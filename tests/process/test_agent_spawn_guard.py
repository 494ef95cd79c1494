"""Jobs of an agent that dies without stopping them are killed by its job guard."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.process.conftest import start_agent

pytestmark = pytest.mark.process


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.05)
    return False


def test_sigkilled_agent_leaves_no_job_behind(tmp_path: Path) -> None:
    agent = start_agent(tmp_path)
    pids: list[int] = []
    try:
        client = agent.connect()
        # the leader (sh) and a descendant (sleep): pdeathsig only ever reached the leader
        client.call(
            "start", tasks=[{"id": 0, "pkg": "shell", "config": {"command": "sleep 60; true"}}]
        )
        client.collect(lambda evs: any(e["type"] == "START" for e in evs))
        deadline = time.monotonic() + 10
        while len(pids) < 2 and time.monotonic() < deadline:
            pids = [p.pid for p in psutil.Process(agent.proc.pid).children(recursive=True)]
            time.sleep(0.05)
        assert len(pids) >= 2, pids
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(10)
        assert _gone(pids, 15), "job processes outlived their SIGKILLed agent"
    finally:
        for pid in pids:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(10)
