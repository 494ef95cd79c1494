"""NetJobs on a real (namespaced) network: three agents, each on its own address.

A fresh namespace gets a bridge with 10.202.0.1-3/24; one real agent
(``python -m farm.agent --host 10.202.0.N --port 3001``) listens on each. The
NetJobs run itself executes inside the namespace (``ip netns exec``) and
reports its results as JSON. The ``netns`` fixture kills what is left,
deletes the namespace and fails if anything survived.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

from .conftest import PYTHON, NetNs, popen_in

ADDRESSES = [f"10.202.0.{i}" for i in (1, 2, 3)]

RUN = r"""
import json, sys
from pathlib import Path
from farm.config import FarmConfig
from farm.netjobs import run_config

config, token = Path(sys.argv[1]), sys.argv[2]
results = run_config(config, token=token, farm_config=FarmConfig(state_dir=config.parent / "st"),
                     log_results=True)
print(json.dumps([{"label": r.label, "passed": r.passed, "skew": r.skew,
                   "statuses": [str(t.status) for t in r.results],
                   "outputs": [t.output for t in r.results]} for r in results]))
"""


def _ip(ns: NetNs, *args: str) -> None:
    subprocess.run(["ip", "-n", ns.name, *args], check=True, capture_output=True, timeout=10)


def wait_listening(ns: NetNs, address: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = ns.run(["ss", "-Htln", f"src {address}:3001"], timeout=10)
        if probe.stdout.strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"no agent listening on {address}:3001 within {timeout} s")


def test_three_agents_start_together_and_minhosts_is_honoured(netns: NetNs) -> None:
    _ip(netns, "link", "add", "nj0", "type", "bridge")
    for address in ADDRESSES:
        _ip(netns, "addr", "add", f"{address}/24", "dev", "nj0")
    _ip(netns, "link", "set", "nj0", "up")
    token = secrets.token_hex(16)
    agents = []
    try:
        for i, address in enumerate(ADDRESSES):
            argv = [PYTHON, "-m", "farm.agent", "--host", address, "--port", "3001",
                    "--token", token, "--workdir", str(netns.dir / f"agent{i}.work")]  # fmt: skip
            agents.append(popen_in(netns, argv, log=netns.dir / f"agent{i}.log"))
        for address in ADDRESSES:
            wait_listening(netns, address)
        a, b, c = ADDRESSES
        config = netns.dir / "net.cfg"
        config.write_text(
            f'dates:\n-generaltimeout: 30s\n{a}: "date +%s.%N"\n{b}: "date +%s.%N"\n'
            f'{c}: "date +%s.%N"\nend\n'
            f'all:\n-minhosts: all\n{a}: "sleep 30"\n-timeout: 0.5s\n{b}: "sleep 30"\n'
            f'{c}: "sleep 30"\nend\n'
            f'one:\n-minhosts: 1\n{a}: "sleep 30"\n-timeout: 0.5s\n{b}: "echo b"\n{c}: "echo c"\n'
            "end\n"
        )
        res = netns.python(RUN, str(config), token, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        dates, all_, one = json.loads(res.stdout.strip().splitlines()[-1])
        assert dates["statuses"] == ["SUCCESS"] * 3 and dates["passed"]
        assert all(float(out) > 0 for out in dates["outputs"])
        print(f"netns start skew of three local agents: {dates['skew'] * 1e3:.3f} ms")
        assert dates["skew"] < 0.050  # the requirement for local agents
        assert all_["statuses"] == ["TIMEOUT", "KILLED", "KILLED"] and not all_["passed"]
        assert one["statuses"] == ["TIMEOUT", "SUCCESS", "SUCCESS"] and one["passed"]
        assert len(list(Path(netns.dir).glob("net_*.log"))) == 3
    finally:
        for proc in agents:
            proc.terminate()
        for proc in agents:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
