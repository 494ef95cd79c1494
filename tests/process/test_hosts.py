"""Existing targets: agents on loopback addresses 127.0.0.x, found by probing a CIDR range.

Linux routes all of 127.0.0.0/8 to ``lo``, so agents listening on 127.0.0.2,
127.0.0.3, ... on one port are distinct "hosts"; addresses where no agent
listens refuse the connection.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from farm import Distributor
from farm.backend.hosts import ExistingHostsBackend
from farm.config import FarmConfig
from farm.monitors import FINISHED_NOT_ONCE, SqliteMonitor
from farm.taskset import Task, TaskSet
from tests.helpers import wait_for

from .conftest import REPO, AgentProcess

HOSTS = [f"127.0.0.{i}" for i in range(1, 7)]  # the hosts of 127.0.0.0/29


def free_port() -> int:
    """A port free on every address of 127.0.0.0/29."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for host in HOSTS:
                with socket.socket() as probe:
                    probe.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on all of 127.0.0.0/29")


def config(tmp_path: Path, port: int, token: str, **kw: object) -> FarmConfig:
    base: dict[str, object] = {
        "state_dir": tmp_path / "state",
        "log_dir": tmp_path / "log",
        "log_file": True,  # pytest configures logging: "auto" would not
        "agent_port": port,
        "token": token,
        "heartbeat": 0.2,
        "heartbeat_timeout": 2.0,
        "idle_linger": 0.2,
        "boot_timeout": 20.0,
        "set_tries": 10,
    }
    base.update(kw)
    return FarmConfig(**base)  # type: ignore[arg-type]


def agent_on(
    agent_factory: Callable[..., AgentProcess], host: str, port: int, token: str
) -> AgentProcess:
    agent = agent_factory("--host", host, "--port", str(port), "--heartbeat", "0.2", token=token)
    agent.host = host
    return agent


def test_cidr_pool_runs_on_answering_hosts_survives_loss_and_finds_new_ones(
    tmp_path: Path, agent_factory: Callable[..., AgentProcess]
) -> None:
    port, token = free_port(), secrets.token_hex(16)
    agents = {h: agent_on(agent_factory, h, port, token) for h in ("127.0.0.2", "127.0.0.3")}
    db = tmp_path / "results.db"
    dist = Distributor(["127.0.0.0/29"], config=config(tmp_path, port, token), rescan_interval=0.5)
    backend = dist._backend
    assert isinstance(backend, ExistingHostsBackend)
    assert dist.get_max_machine_value() == 6  # one slot per host of the range
    sets = TaskSet(
        [Task({"pkg": "idle", "config": {"ms": 300}, "numberofjobs": 2, "x-run": range(10)})]
    )
    try:
        job = dist.add_job(sets, SqliteMonitor(db))
        # the hosts without an agent are probed and found unavailable
        assert backend.wait_for(lambda s: s["leased"] == 2 and s["new"] == 0, 20.0)
        states = {h["address"].split(":")[0]: h for h in backend.hosts()}
        for dead in ("127.0.0.1", "127.0.0.4", "127.0.0.5", "127.0.0.6"):
            assert not states[dead]["ever_up"], states[dead]
            assert states[dead]["state"] in ("down", "probing"), states[dead]

        # kill the agent of 127.0.0.2 while it runs a set
        def running_on_2() -> bool:
            return any(
                m["address"] == f"127.0.0.2:{port}" and m["current"] for m in dist.machines()
            )

        wait_for("a set running on 127.0.0.2", running_on_2, 20.0)
        agents["127.0.0.2"].proc.send_signal(signal.SIGKILL)
        agents["127.0.0.2"].proc.wait(10)
        # an agent appears on an address that was dead: the rescan picks it up
        agent_on(agent_factory, "127.0.0.4", port, token)
        assert dist.wait_finished(timeout=120), dist.jobs()
        assert job.stopped >= 1  # the killed host's set was re-queued
    finally:
        dist.close()
    with sqlite3.connect(db) as con:
        assert con.execute(FINISHED_NOT_ONCE).fetchall() == []
        finished = con.execute("SELECT COUNT(*) FROM tasksets WHERE state='finished'").fetchone()[0]
        stopped = con.execute("SELECT COUNT(*) FROM runs WHERE state='stopped'").fetchone()[0]
    assert finished == 10
    assert stopped >= 1
    states = {h["address"].split(":")[0]: h for h in backend.hosts()}
    assert states["127.0.0.4"]["ever_up"]
    assert states["127.0.0.2"]["state"] != "dropped"  # it answered once: kept for rescans
    log = (tmp_path / "log" / "distributor.log").read_text()
    assert f"leased 127.0.0.4:{port}" in log
    assert f"127.0.0.2:{port} is unavailable" in log


def test_hosts_refusing_repeatedly_are_dropped(
    tmp_path: Path, agent_factory: Callable[..., AgentProcess]
) -> None:
    port, token = free_port(), secrets.token_hex(16)
    agent_on(agent_factory, "127.0.0.3", port, token)
    backend = ExistingHostsBackend(
        config(tmp_path, port, token), ["127.0.0.2", "127.0.0.3"], drop_after=3, rescan_interval=0.1
    )
    try:
        backend.start()
        assert backend.wait_for(lambda s: s["dropped"] == 1 and s["free"] == 1, 20.0)
        states = {h["address"]: h["state"] for h in backend.hosts()}
        assert states == {f"127.0.0.2:{port}": "dropped", f"127.0.0.3:{port}": "free"}
    finally:
        backend.close()


def test_cli_run_on_existing_target(
    tmp_path: Path, agent_factory: Callable[..., AgentProcess]
) -> None:
    port, token = free_port(), secrets.token_hex(16)
    agent_on(agent_factory, "127.0.0.3", port, token)
    toml = tmp_path / "farm.toml"
    toml.write_text(
        f'state_dir = "{tmp_path / "state"}"\nlog_dir = "{tmp_path / "log"}"\n'
        f'token = "{token}"\nagent_port = {port}\nheartbeat_timeout = 3.0\nboot_timeout = 20.0\n'
    )
    argv = [sys.executable, "-m", "farm.cli", "--config", str(toml), "run", "example.Hey0TaskSet"]
    proc = subprocess.run(
        [*argv, "127.0.0.2", "127.0.0.3", "--machines", "1", "--json"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["job"]["finished"] == 1
    assert summary["machines"] == 1


def test_cli_rejects_bad_destination(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "farm.cli", "run", "example.Hey0TaskSet", "10.0.0.0/33"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "10.0.0.0/33" in proc.stderr
