"""NetJobs start skew: three agents, one synchronised ``date +%s.%N`` test, many rounds.

Prints one JSON document: the measured start skew (spread of the agents'
recorded start instants, corrected for each agent's clock offset) and the
spread of the wall-clock stamps the commands printed, per round summarised
as median / p95 / max in milliseconds, plus the clock-offset RTTs.

    .venv/bin/python bench/netjobs_skew.py [--rounds 20] [--where loopback|netns]

``loopback``: agents on 127.0.0.1 (one port each). ``netns`` (root): a private
namespace ``farmbench-XXXX`` with a bridge holding 10.203.0.1-3, one agent on
each address; the bench re-executes itself inside it and deletes it after.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from farm.config import FarmConfig  # noqa: E402
from farm.netjobs import run_config  # noqa: E402

NETNS_ENV = "FARM_BENCH_NETNS"
NS_ADDRESSES = ["10.203.0.1", "10.203.0.2", "10.203.0.3"]


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(v * 1e3 for v in values)
    return {
        "median": round(statistics.median(ordered), 3),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
        "min": round(ordered[0], 3),
    }


def start_agents(
    hosts: list[str], token: str, workdir: Path
) -> list[tuple[subprocess.Popen[bytes], str]]:
    """One agent per host (port from its port file); returns (process, "host:port")."""
    agents = []
    for i, host in enumerate(hosts):
        port_file = workdir / f"agent{i}.port"
        argv = [sys.executable, "-m", "farm.agent", "--host", host, "--port", "0",
                "--port-file", str(port_file), "--token", token]  # fmt: skip
        with (workdir / f"agent{i}.log").open("wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"agent on {host} did not start")
            time.sleep(0.05)
        agents.append((proc, f"{host}:{port_file.read_text().strip()}"))
    return agents


def measure(hosts: list[str], rounds: int) -> dict[str, Any]:
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="njbench") as tmp:
        workdir = Path(tmp)
        agents = start_agents(hosts, token, workdir)
        try:
            config = workdir / "skew.cfg"
            lines = [f'{addr}: "date +%s.%N"' for _, addr in agents]
            config.write_text(
                "".join(
                    f"r{i}:\n-generaltimeout: 30s\n" + "\n".join(lines) + "\nend\n"
                    for i in range(rounds)
                )
            )
            results = run_config(config, token=token, farm_config=FarmConfig(state_dir=workdir))
        finally:
            for proc, _ in agents:
                proc.terminate()
            for proc, _ in agents:
                proc.wait(15)
    skews, stamps, rtts = [], [], []
    for result in results:
        if not result.passed or result.skew is None:
            raise SystemExit(f"round {result.label} failed: {[r.detail for r in result.results]}")
        skews.append(result.skew)
        printed = [float(r.output) for r in result.results]
        stamps.append(max(printed) - min(printed))
        rtts += [r.rtt for r in result.results if r.rtt is not None]
    return {
        "agents": len(hosts),
        "rounds": rounds,
        "start_skew_ms": _ms(skews),
        "printed_date_spread_ms": _ms(stamps),
        "clock_rtt_ms": _ms(rtts),
    }


def run_in_namespace(argv: list[str]) -> int:
    """Re-run this bench inside a fresh namespace with a bridge holding NS_ADDRESSES."""
    if os.geteuid() != 0:
        raise SystemExit("--where netns needs root (ip netns)")
    name = f"farmbench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["link", "set", "lo", "up"], ["link", "add", "njb0", "type", "bridge"],
                    *(["addr", "add", f"{a}/24", "dev", "njb0"] for a in NS_ADDRESSES),
                    ["link", "set", "njb0", "up"]):  # fmt: skip
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        env = {**os.environ, NETNS_ENV: name, "PYTHONPATH": str(REPO)}
        return subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, *argv], env=env
        ).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--where", choices=("loopback", "netns"), default="loopback")
    args = parser.parse_args(argv)
    if args.where == "netns" and not os.environ.get(NETNS_ENV):
        return run_in_namespace([str(Path(__file__).resolve()), *sys.argv[1:]])
    hosts = NS_ADDRESSES if args.where == "netns" else ["127.0.0.1"] * 3
    doc = {"where": args.where, **measure(hosts, args.rounds)}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
