"""Every process a task set or an exec run starts ends with it (issue 15, point 5).

A job or an exec'd command that starts ``setsid sleep N &`` leaves a process in
a session and process group of its own, which no killpg reaches: the set's
cgroup (``cgroup.kill``) or, without a writable cgroup, the sweep by the set's
environment marker must end it at the stop and at the end of the set or run.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from farm.agent import guard
from tests.process.conftest import AgentProcess

pytestmark = pytest.mark.process

_numbers = itertools.count(1)
Started = tuple[AgentProcess, bool]  # the agent, and whether it uses cgroups


def _tag() -> str:
    """A sleep length no other process uses: its processes are found by command line."""
    return f"{7000 + os.getpid() % 1000}.{next(_numbers)}"


def _running(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == ["sleep", tag] and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _cleanup(tag: str) -> None:
    for proc in _running(tag):
        proc.kill()


def _cgroup_usable() -> bool:
    """Whether an agent here gets cgroups (probed in a child: the probe makes a cgroup)."""
    probe = "import os; from farm.agent import guard; r = guard.cgroup_root(); print(bool(r))"
    probe += "; r and os.rmdir(r)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


@pytest.fixture(params=["cgroup", "sweep"])
def started(request: pytest.FixtureRequest, agent_factory: Callable[..., AgentProcess]) -> Started:
    """An agent using cgroups (where this host lets it) or the marker sweep only."""
    if request.param == "sweep":
        return agent_factory(env={guard.CGROUP_ENV: "0"}), False
    if not _cgroup_usable():
        pytest.skip("no writable cgroup v2 with cgroup.kill here: the sweep case covers this host")
    return agent_factory(), True


def _check_cgroup(started: Started, tag: str, kind: str) -> None:
    """With cgroups, the setsid'ed child is in its group's cgroup (the agent's subtree)."""
    agent, cgroups = started
    if cgroups:
        for proc in _running(tag):
            with open(f"/proc/{proc.pid}/cgroup", encoding="utf-8") as fh:
                assert f"/farm-{agent.proc.pid}/{kind}-" in fh.read()


def test_a_jobs_setsid_child_ends_with_the_stop_and_with_the_set(
    started: tuple[AgentProcess, bool],
) -> None:
    client = started[0].connect()
    stopped, finished = _tag(), _tag()
    try:
        command = f"setsid sleep {stopped} & sleep 60"
        client.call("start", tasks=[{"id": 0, "pkg": "shell", "config": {"command": command}}])
        assert _wait(lambda: bool(_running(stopped))), "the job's setsid child never ran"
        _check_cgroup(started, stopped, "set")
        client.call("stop")
        assert not _running(stopped), "a job's setsid child outlived the stop"

        command = f"setsid sleep {finished} & sleep 0.3"
        client.run_taskset([{"id": 1, "pkg": "shell", "config": {"command": command}}])
        assert _wait(lambda: not _running(finished)), "a job's setsid child outlived its set"
    finally:
        _cleanup(stopped)
        _cleanup(finished)


def _job_cgroups(client: object, sets: int, first_id: int = 0) -> list[str]:
    """The cgroup of each set's one job (it prints its own), sets run one after another."""
    found = []
    for n in range(first_id, first_id + sets):
        task = {"id": n, "pkg": "shell", "config": {"command": "cat /proc/self/cgroup"}}
        events = client.run_taskset([task])  # type: ignore[attr-defined]
        (end,) = [e for e in events if e["type"].startswith("EXIT") and e["task_id"] == n]
        assert end["type"] == "EXIT", end
        found.append(end["output"].strip())
    return found


def test_a_set_left_empty_hands_its_cgroup_to_the_next(
    agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    """No cgroup is made, entered or killed between sets when a set leaves nothing behind.

    (Moving the agent, a process of many threads, between cgroups is one of the
    costliest steps of a trivial set.) A set that does leave a process gets a
    fresh cgroup after it, and that process is killed (the test above).
    """
    if not _cgroup_usable():
        pytest.skip("no writable cgroup v2 with cgroup.kill here: no cgroup to hand over")
    agent = agent_factory()
    client = agent.connect()
    first, second, third = _job_cgroups(client, 3)
    assert f"/farm-{agent.proc.pid}/" in first
    assert first == second == third
    leftover = _tag()
    try:
        started = tmp_path / "leftover.pid"  # written once it has left the job's group
        command = (
            f"setsid sh -c 'echo $$ > {started}; exec sleep {leftover}' & "
            f"until [ -s {started} ]; do sleep 0.01; done; cat /proc/self/cgroup"
        )
        events = client.run_taskset([{"id": 9, "pkg": "shell", "config": {"command": command}}])
        (end,) = [e for e in events if e["type"].startswith("EXIT") and e["task_id"] == 9]
        assert end["output"].strip() == first
        assert _wait(lambda: not _running(leftover)), "the leftover outlived its set"
        (after,) = _job_cgroups(client, 1, first_id=10)
        assert after != first and f"/farm-{agent.proc.pid}/" in after
    finally:
        _cleanup(leftover)


def _poll_end(client: object, rid: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = client.call("exec_poll", id=rid, offset=0, wait=1.0)  # type: ignore[attr-defined]
        if reply["state"] in ("exited", "killed", "timeout", "failed"):
            return dict(reply)
    raise AssertionError(f"exec run {rid} did not end")


def test_an_exec_runs_setsid_child_ends_with_the_run(started: Started) -> None:
    client = started[0].connect()
    finished, killed = _tag(), _tag()
    try:
        run = client.call("exec", command=f"setsid sleep {finished} & echo started")
        assert _poll_end(client, run["id"])["state"] == "exited"
        assert not _running(finished), "an exec run's setsid child outlived the run"

        run = client.call("exec", command=f"setsid sleep {killed} & sleep 60")
        assert _wait(lambda: bool(_running(killed))), "the run's setsid child never ran"
        _check_cgroup(started, killed, "exec")
        client.call("exec_kill", id=run["id"])
        assert _poll_end(client, run["id"])["state"] == "killed"
        assert not _running(killed), "an exec run's setsid child outlived its kill"
    finally:
        _cleanup(finished)
        _cleanup(killed)


def test_an_exec_runs_setsid_child_ends_with_a_killed_agent(
    started: tuple[AgentProcess, bool],
) -> None:
    client = started[0].connect()
    tag = _tag()
    try:
        client.call("exec", command=f"setsid sleep {tag} & sleep 60")
        assert _wait(lambda: bool(_running(tag))), "the run's setsid child never ran"
        started[0].proc.kill()
        started[0].proc.wait(10)
        assert _wait(lambda: not _running(tag)), "an exec run's child outlived its agent"
    finally:
        _cleanup(tag)
