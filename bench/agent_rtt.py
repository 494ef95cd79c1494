"""Benchmark: trivial task sets per second against a local agent vs the bare round trip.

Starts ``python -m farm.agent`` on loopback, connects one FarmSession, then
measures (a) the bare request/response round trip (``ping``) and (b) full
task-set cycles of a one-job ``hey`` task (start -> START/EXIT/JOBS_DONE) on
the same connection. Prints one JSON document; the ratio of (b)'s time per set
to (a)'s time per ping is the cost of a set beyond the protocol itself (it
includes spawning the job process). :func:`bare_exchange` is reused by
``bench/dispatch.py`` against the agents a Distributor booted. ``cpu_us``: CPU
time (user + system) of this process and of the agent per ping and per set,
steadier than wall-clock figures on a busy machine (10 ms clock ticks: use
enough pings).

    .venv/bin/python bench/agent_rtt.py [--sets 200] [--pings 2000]
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import percentile  # noqa: E402

from farm.session import FarmSession  # noqa: E402
from farm.taskset import Task, TaskSet  # noqa: E402

#: the trivial set of every bench: one task, one job, a process that prints "hey"
TRIVIAL = {"pkg": "hey"}


def start_agent(token: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A local agent on 127.0.0.1 (ephemeral port); returns the process and its port."""
    port_file = tmp / "port"
    env = {**os.environ, "FARM_TOKEN": token, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "farm.agent", "--port", "0", "--port-file", str(port_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text())
        time.sleep(0.01)
    proc.kill()
    raise RuntimeError("agent did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_exchange(
    session: FarmSession, sets: int, pings: int, agent_pid: int | None = None
) -> dict[str, Any]:
    """Ping round trips and bare start -> events -> finished cycles of the trivial set.

    ``agent_pid``: a local agent's process, whose CPU time is then reported too.
    """
    for _ in range(min(50, pings)):
        session.ping()

    def cpu() -> tuple[float, float]:
        return time.process_time(), cpu_seconds(agent_pid) if agent_pid else 0.0

    rtts = []
    c0 = cpu()
    t0 = time.perf_counter()
    for _ in range(pings):
        rtts.append(session.ping())
    ping_wall = time.perf_counter() - t0
    c1 = cpu()
    variant = next(TaskSet([Task(dict(TRIVIAL))]).variants())
    set_times = []
    t0 = time.perf_counter()
    for _ in range(sets):
        s0 = time.perf_counter()
        session.start(variant)
        while not session.finished():
            session.run(timeout=5.0)
        set_times.append(time.perf_counter() - s0)
    sets_wall = time.perf_counter() - t0
    c2 = cpu()
    cpu_us = {
        "host_per_ping": round((c1[0] - c0[0]) / max(1, pings) * 1e6, 1),
        "host_per_set": round((c2[0] - c1[0]) / max(1, sets) * 1e6, 1),
    }
    if agent_pid:
        cpu_us["agent_per_ping"] = round((c1[1] - c0[1]) / max(1, pings) * 1e6, 1)
        cpu_us["agent_per_set"] = round((c2[1] - c1[1]) / max(1, sets) * 1e6, 1)
    ping_median = statistics.median(rtts)
    set_median = statistics.median(set_times)
    return {
        "pings": pings,
        "ping_rtt_ms": {
            "median": round(ping_median * 1e3, 4),
            "p99": round(percentile(rtts, 99) * 1e3, 4),
        },
        "pings_per_s": round(pings / ping_wall, 1),
        "sets": sets,
        "set_ms": {
            "median": round(set_median * 1e3, 3),
            "p99": round(percentile(set_times, 99) * 1e3, 3),
        },
        "sets_per_s": round(sets / sets_wall, 2),
        "set_over_ping_ratio": round(set_median / ping_median, 1),
        "cpu_us": cpu_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", type=int, default=200)
    parser.add_argument("--pings", type=int, default=2000)
    args = parser.parse_args()
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_agent(token, Path(tmp))
        try:
            session = FarmSession("127.0.0.1", port, token=token)
            session.connect()
            doc = bare_exchange(session, args.sets, args.pings, proc.pid)
            session.close()
        finally:
            proc.terminate()
            proc.wait(10)
    doc = {
        "bench": "agent_rtt",
        **doc,
        "note": "one-job hey task: includes spawning the job process in the agent",
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
