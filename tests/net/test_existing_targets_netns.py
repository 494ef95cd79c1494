"""Existing targets on a real (namespaced) network: two agent hosts on a bridge, found by CIDR.

Three fresh namespaces: "farm" holds bridge ``br-x`` (10.201.0.1/24); "host A"
(10.201.0.2) and "host B" (10.201.0.3) each hang on it by a veth pair and run
the real agent (``python -m farm.agent --host 0.0.0.0 --port 3001``). Inside
the farm namespace a Distributor given ``10.201.0.0/29`` must lease exactly A
and B (.1 is the bridge itself, .4-.6 are empty), run a job on both, survive
host A's agent being SIGKILLed mid-set (its set is re-queued and finishes on
B), and lease A again once its agent is back (found by the rescan). The
``netlab`` fixture deletes the namespaces and fails if anything was left
running in them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm.monitors import FINISHED_NOT_ONCE
from tests.helpers import query

from .conftest import PYTHON, REPO, NetLab, NetNs, popen_in

PORT = 3001
SUBNET = "10.201.0"
HOST_A, HOST_B = f"{SUBNET}.2", f"{SUBNET}.3"
EMPTY = [f"{SUBNET}.{i}" for i in (1, 4, 5, 6)]  # .1 is the bridge: up, but no agent

# Runs inside the farm namespace. Talks to the test by JSON lines on stdout
# ({"tag": ...}) and waits for the test's answers ("killed", "restarted") on stdin.
SCENARIO = r"""
import json, sys, time
from pathlib import Path
from farm.backend.hosts import ExistingHostsBackend
from farm.config import FarmConfig
from farm import Distributor
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet

base, token, subnet, host_a = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
PORT = 3001
A = f"{host_a}:{PORT}"


def say(tag, **data):
    print(json.dumps({"tag": tag, **data}, default=str), flush=True)


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def expect(word):
    line = sys.stdin.readline().strip()
    if line != word:
        raise SystemExit(f"expected {word!r} from the test, got {line!r}")


def host(address):
    return next(h for h in backend.hosts() if h["address"] == address)


def sets(n):
    return TaskSet([Task({"pkg": "idle", "config": {"ms": 1500}, "numberofjobs": 1,
                          "x-run": range(n)})])


config = FarmConfig(
    state_dir=base / "state", log_dir=base / "log", token=token, agent_port=PORT,
    idle_linger=0.2, boot_timeout=20.0, set_tries=10, rescan_interval=0.5,
)
dist = Distributor([subnet], config=config)
backend = dist._backend
assert isinstance(backend, ExistingHostsBackend)
try:
    job1 = dist.add_job(sets(8), SqliteMonitor(base / "job1.db"))
    # every address probed at least once, both agents leased
    wait_for(lambda: backend.counts()["leased"] == 2
             and all(h["probes"] >= 1 for h in backend.hosts()), 30, "two leases")
    say("found", max_machines=dist.get_max_machine_value(), status=backend.counts(),
        hosts=backend.hosts())

    wait_for(lambda: any(m["address"] == A and m["current"] for m in dist.machines()), 30,
             "a set running on host A")
    say("running_on_a", machines=dist.machines())
    expect("killed")

    finished1 = dist.wait_finished(timeout=90)
    say("job1", finished=finished1, stopped=job1.stopped, jobs=dist.jobs(),
        host_a=host(A), status=backend.counts())
    expect("restarted")
    mark = (base / "log" / "distributor.log").stat().st_size

    wait_for(lambda: host(A)["state"] in ("free", "leased"), 30, "host A found again")
    found_again = host(A)
    job2 = dist.add_job(sets(4), SqliteMonitor(base / "job2.db"))
    wait_for(lambda: any(m["address"] == A and m["current"] for m in dist.machines()), 30,
             "a set running on host A again")
    running_again = dist.machines()
    finished2 = dist.wait_finished(timeout=90)
    say("done", log_mark=mark, found_again=found_again, running_again=running_again,
        finished=finished2, jobs=dist.jobs(), hosts=backend.hosts())
finally:
    dist.close()
say("closed")
"""


class Script:
    """The scenario running in the farm namespace: JSON lines out, answers in."""

    def __init__(self, ns: NetNs, token: str) -> None:
        path = ns.dir / "scenario.py"
        path.write_text(SCENARIO)
        self.stderr = ns.dir / "scenario.err"
        argv = [PYTHON, str(path), str(ns.dir), token, f"{SUBNET}.0/29", HOST_A]
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns.name, *argv],
                cwd=ns.dir,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def context(self) -> str:
        return f"scenario stderr:\n{self.stderr.read_text(errors='replace')[-4000:]}"

    def expect(self, tag: str, timeout: float) -> dict[str, Any]:
        """The next message; it must carry ``tag``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {tag!r} within {timeout:g} s\n{self.context()}") from None
        assert line is not None, f"scenario ended before {tag!r}\n{self.context()}"
        msg: dict[str, Any] = json.loads(line)
        assert msg["tag"] == tag, f"expected {tag!r}, got {msg}\n{self.context()}"
        return msg

    def answer(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """End the scenario (SIGTERM, then SIGKILL to its process group)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def start_agent(ns: NetNs, token: str, log: Path) -> subprocess.Popen[bytes]:
    """The real agent on 0.0.0.0:3001 inside ``ns``; returns once it listens. Its work
    directory is in the namespace's scratch directory: host A's is SIGKILLed, and left a
    /tmp/farm-agent-* of its own behind in every run."""
    argv = [PYTHON, "-m", "farm.agent", "--host", "0.0.0.0", "--port", str(PORT)]
    argv += ["--workdir", str(log.with_suffix(".work"))]
    proc = popen_in(ns, [*argv, "--token", token], log=log)
    deadline = time.monotonic() + 15
    while "farm-agent listening" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_agent(proc)
            raise AssertionError(f"agent in {ns.name} did not start: {log.read_text()}")
        time.sleep(0.05)
    return proc


def stop_agent(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the agent's process group (agent + its jobs); SIGKILL if it lingers."""
    for s in (sig, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # job processes of an agent that died first


LEASED = re.compile(r"farm\.backend\.hosts\.(\w+): leased (\S+)")
SET = re.compile(r"farm\.core\.slot\.(\w+): set (\S+) #(\d+) (interrupted|finished)")


def set_hosts(log: str) -> list[tuple[str, str, str]]:
    """(set, outcome, host) per ``set ... interrupted|finished`` line of the distributor log."""
    lease: dict[str, str] = {}  # machine -> address it leased last
    found = []
    for line in log.splitlines():
        if m := LEASED.search(line):
            lease[m.group(1)] = m.group(2)
        elif m := SET.search(line):
            found.append((f"{m.group(2)}#{m.group(3)}", m.group(4), lease.get(m.group(1), "?")))
    return found


@pytest.mark.timeout(180)
def test_cidr_targets_in_namespaces_survive_agent_loss_and_are_rescanned(netlab: NetLab) -> None:
    """Two agent hosts behind a bridge: found by CIDR, one killed mid-set, leased again."""
    farm, ns_a, ns_b = netlab.add(), netlab.add(), netlab.add()
    netlab.bridge(farm, "br-x", f"{SUBNET}.1/24")
    netlab.veth(farm, "br-x", "veth-a", ns_a, f"{HOST_A}/24")
    netlab.veth(farm, "br-x", "veth-b", ns_b, f"{HOST_B}/24")
    token = secrets.token_hex(16)
    agents: list[subprocess.Popen[bytes]] = []
    script: Script | None = None
    try:
        agent_a = start_agent(ns_a, token, ns_a.dir / "agent1.log")
        agents.append(agent_a)
        agents.append(start_agent(ns_b, token, ns_b.dir / "agent.log"))
        script = Script(farm, token)

        found = script.expect("found", 40)
        running = script.expect("running_on_a", 40)
        stop_agent(agent_a, signal.SIGKILL)  # host A dies mid-set
        assert (ns_a.dir / "agent1.work" / "jobs").is_dir()  # not in /tmp: goes with ns_a
        script.answer("killed")
        job1 = script.expect("job1", 100)
        agents.append(start_agent(ns_a, token, ns_a.dir / "agent2.log"))  # host A is back
        script.answer("restarted")
        done = script.expect("done", 100)
        script.expect("closed", 30)
        assert script.proc.wait(30) == 0, script.context()
    finally:
        if script is not None:
            script.stop()
        for proc in agents:
            if proc.returncode is None:  # host A's first agent was already killed and reaped
                stop_agent(proc)
    context = script.context()
    log = (farm.dir / "log" / "distributor.log").read_text(errors="replace")
    a, b = f"{HOST_A}:{PORT}", f"{HOST_B}:{PORT}"

    # exactly the two agent hosts were found; nothing answered on .1 or .4-.6
    hosts = {h["address"]: h for h in found["hosts"]}
    assert len(hosts) == 6 and found["max_machines"] == 6
    assert {addr for addr, h in hosts.items() if h["ever_up"]} == {a, b}, found
    assert hosts[a]["state"] == hosts[b]["state"] == "leased", found
    for ip in EMPTY:
        assert hosts[f"{ip}:{PORT}"]["state"] in ("down", "probing", "dropped"), found
    assert f"leased {a}" in log and f"leased {b}" in log
    assert not any(f"leased {ip}:" in log for ip in EMPTY), log
    assert any(m["address"] == a and m["current"] for m in running["machines"])

    # job 1: host A's set was re-queued and finished on B (A stayed dead until job 1 ended)
    assert job1["finished"] is True, context
    assert job1["stopped"] >= 1, job1
    assert job1["host_a"]["state"] in ("down", "probing"), job1
    assert f"{a} is unavailable" in log
    before = log.encode()[: done["log_mark"]].decode(errors="replace")
    outcomes = set_hosts(before)
    lost = [s for s, outcome, host in outcomes if outcome == "interrupted" and host == a]
    assert lost, outcomes
    for name in lost:  # ... and finished on B
        assert (name, "finished", b) in outcomes, outcomes
        assert (name, "finished", a) not in outcomes, outcomes
    db1 = farm.dir / "job1.db"
    assert query(db1, FINISHED_NOT_ONCE) == []
    assert query(db1, "SELECT state, count(*) FROM tasksets GROUP BY state") == [("finished", 8)]
    assert query(db1, "SELECT count(*) FROM runs WHERE state = 'stopped'")[0][0] >= 1

    # host A's agent is back: the rescan finds it, it is leased again and runs job 2's sets
    assert done["found_again"]["state"] in ("free", "leased"), done
    assert done["finished"] is True, context
    after = log.encode()[done["log_mark"] :].decode(errors="replace")
    assert f"{a} is available" in after, after
    assert f"leased {a}" in after, after
    assert any(m["address"] == a and m["current"] for m in done["running_again"])
    db2 = farm.dir / "job2.db"
    assert query(db2, FINISHED_NOT_ONCE) == []
    assert query(db2, "SELECT state, count(*) FROM tasksets GROUP BY state") == [("finished", 4)]
