"""NetJobs on real agent processes (loopback): the exec ops, ``farm netjobs`` end to end."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from farm.config import FarmConfig
from farm.netjobs import Status, run_config

from .conftest import AgentClient, AgentProcess, ReplyError

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "netjobs"


def call(client: AgentClient, op: str, **args: Any) -> Any:
    """Like ``client.call`` but passes every keyword (``timeout`` too) as an op argument."""
    rid = f"t{time.monotonic_ns()}"
    client.send({"type": "request", "id": rid, "op": op, "args": args})
    while True:
        frame = client.read(30.0)
        if frame.get("type") == "reply" and frame.get("id") == rid:
            if not frame["ok"]:
                raise ReplyError(frame["error"]["code"], frame["error"]["message"])
            return frame["result"]


def poll_all(client: AgentClient, rid: str, timeout: float = 30.0) -> tuple[dict[str, Any], bytes]:
    """Poll a command until eof; return the last reply and the whole output."""
    out, offset, deadline = bytearray(), 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = client.call("exec_poll", id=rid, offset=offset, wait=1.0)
        out += base64.b64decode(reply["data"])
        offset = reply["next_offset"]
        if reply["eof"]:
            return reply, bytes(out)
    raise AssertionError(f"command {rid} did not end in {timeout} s")


def test_exec_starts_at_the_given_instant_and_returns_the_whole_output(
    agent: AgentProcess,
) -> None:
    client = agent.connect()
    now = client.call("time")["monotonic"]
    big = 3 * 1024 * 1024 + 17  # several poll chunks, far beyond NetJobs' 4 KB cut
    command = f"head -c {big} /dev/zero | tr '\\0' x; echo; exit 4"
    reply = call(client, "exec", command=command, at=now + 0.3, timeout=None)
    assert not reply["late"]
    last, out = poll_all(client, reply["id"])
    assert last["state"] == "exited" and last["exit_code"] == 4
    assert out == b"x" * big + b"\n"
    assert last["started"] >= now + 0.3  # not before its instant


def test_exec_timeout_kill_and_errors(agent: AgentProcess) -> None:
    client = agent.connect()
    timed = call(client, "exec", command="echo before; sleep 30", timeout=0.3)
    last, out = poll_all(client, timed["id"])
    assert last["state"] == "timeout" and out == b"before\n"
    killed = client.call("exec", command="sleep 30")
    assert client.call("exec_kill", id=killed["id"])["killed"]
    last, _ = poll_all(client, killed["id"])
    assert last["state"] == "killed"
    assert client.call("exec_forget", id=killed["id"]) == {"forgotten": True}
    waiting = client.call("exec", command="echo never", at=client.call("time")["monotonic"] + 60)
    client.call("exec_kill", id=waiting["id"])
    last, out = poll_all(client, waiting["id"])
    assert last["state"] == "killed" and last["started"] is None and out == b""
    for op, args, code in [
        ("exec", {"command": ""}, "bad_request"),
        ("exec", {"command": "true", "timeout": -1}, "bad_request"),
        ("exec", {"command": "true", "at": "soon"}, "bad_request"),
        ("exec_poll", {"id": "nope"}, "not_found"),
        ("exec_poll", {"id": timed["id"], "offset": -1}, "bad_request"),
        ("exec_kill", {"id": 7}, "not_found"),
    ]:
        with pytest.raises(ReplyError) as info:
            call(client, op, **args)
        assert info.value.code == code, (op, args)
    other = agent.connect()  # commands belong to the client that started them
    with pytest.raises(ReplyError, match="not_found"):
        other.call("exec_poll", id=timed["id"])


def test_a_client_that_leaves_has_its_commands_killed(agent: AgentProcess) -> None:
    client = agent.connect()
    client.call("exec", command="sleep 60")
    deadline = time.monotonic() + 10
    while not agent.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.children()
    client.close()
    deadline = time.monotonic() + 10
    while agent.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.children() == []


def fill(template: Path, dest: Path, agents: list[AgentProcess]) -> Path:
    text = template.read_text()
    for i, agent in enumerate(agents):
        text = text.replace(f"PORT{i}", str(agent.port))
    dest.write_text(text)
    return dest


def farm_cli(cwd: Path, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm.cli", "netjobs", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "FARM_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=120,
    )


TOKEN = "netjobs-test-token"


@pytest.fixture
def three(agent_factory: Callable[..., AgentProcess]) -> list[AgentProcess]:
    return [agent_factory(token=TOKEN) for _ in range(3)]


def test_seed_examples_run_with_logs_and_a_sqlite_monitor(
    three: list[AgentProcess], tmp_path: Path
) -> None:
    for name in ("seed003_test0.cfg", "seed003_test1.cfg"):
        config = fill(DATA / name, tmp_path / name, three)
        res = farm_cli(tmp_path, str(config), "-v", "-l", "--monitor",
                       f"SqliteMonitor={tmp_path / 'r.db'}", token=TOKEN)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        assert "PASSED" in res.stdout and "start skew" in res.stdout
        assert "clock offset" in res.stderr  # -v narrates
        assert ("hello, world" if "test0" in name else "other_test_script") in res.stdout
    logs = sorted(p.name for p in tmp_path.glob("seed003_*_test*.log"))
    assert len(logs) == 2, logs
    assert "and_another_test_script" in (tmp_path / logs[1]).read_text()
    db = sqlite3.connect(tmp_path / "r.db")
    assert sorted(db.execute("SELECT job, state FROM tasksets")) == [
        ("netjobs:test0", "finished"),
        ("netjobs:test1", "finished"),
    ]
    assert db.execute("SELECT COUNT(*) FROM jobs WHERE exit_type = 'EXIT'").fetchone() == (4,)


def test_synchronised_start_timeouts_and_minhosts(
    three: list[AgentProcess], tmp_path: Path
) -> None:
    a, b, c = (f"127.0.0.1:{x.port}" for x in three)
    config = tmp_path / "sync.cfg"
    config.write_text(
        f'dates:\n{a}: "date +%s.%N"\n{b}: "date +%s.%N"\n{c}: "date +%s.%N"\nend\n'
        f'all:\n-minhosts: all\n{a}: "sleep 30"\n-timeout: 0.5s\n{b}: "sleep 30"\n'
        f'{c}: "echo started; sleep 30"\nend\n'
        f'one:\n-minhosts: 1\n-generaltimeout: 20s\n{a}: "sleep 30"\n-timeout: 0.5s\n'
        f'{b}: "sleep 0.2; echo b"\n{c}: "echo c"\nend\n'
    )
    results = run_config(config, token=TOKEN, farm_config=FarmConfig(state_dir=tmp_path / "st"))
    dates, all_, one = results
    assert [r.status for r in dates.results] == [Status.SUCCESS] * 3
    stamps = [float(r.output) for r in dates.results]
    assert max(stamps) - min(stamps) < 5  # real wall clock readings, all from this run
    assert dates.skew is not None and dates.passed
    assert [r.status for r in all_.results] == [Status.TIMEOUT, Status.KILLED, Status.KILLED]
    assert all_.results[2].output == "started\n" and not all_.passed
    assert [r.status for r in one.results] == [Status.TIMEOUT, Status.SUCCESS, Status.SUCCESS]
    assert one.passed and one.results[1].output == "b\n"
    for agent in three:  # nothing left running on the agents
        assert agent.children() == []


def test_cli_exit_codes(three: list[AgentProcess], tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text('t:\nh: "x"\n-timeout: soon\nend\n')
    res = farm_cli(tmp_path, str(bad), token=TOKEN)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"farm: error: {bad}:3: expected a duration like 30s, 5m, 1h or none, got 'soon'"
    ]
    failing = tmp_path / "fail.cfg"
    failing.write_text(f'f:\n127.0.0.1:{three[0].port}: "sleep 30"\n-timeout: 0.2s\nend\n')
    res = farm_cli(tmp_path, str(failing), token=TOKEN)
    assert res.returncode == 1 and "TIMEOUT" in res.stdout and "FAILED" in res.stdout
    sim = farm_cli(tmp_path, str(failing), "-s", token="no-agent-needed")
    assert sim.returncode == 0 and "(simulated)" in sim.stdout, sim.stderr
    wrong = farm_cli(tmp_path, str(failing), token="wrong-token")
    assert wrong.returncode == 1 and "not prepared" in wrong.stdout
