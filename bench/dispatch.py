"""Dispatch latency and farm's per-set overhead, on the agents a Distributor booted.

    .venv/bin/python bench/dispatch.py [--backend local|qemu] [--sets 200]

One machine runs ``--sets`` trivial sets (one ``hey`` job each) through the
Distributor; a monitor keeps every event. Definitions (all instants on the
agent's own monotonic clock, so they hold for guests too):

- dispatch latency of set k+1 = release instant of its first job (START's
  ``release``) minus the instant the agent emitted set k's last JOBS_DONE:
  the machine is free -> JOBS_DONE travels to the host -> Machine/Distributor
  hand out the next variant -> the ``start`` request reaches the agent and it
  releases the job. Job process spawning is not in it.
- farm cycle = median time between consecutive sets' last JOBS_DONE on the
  machine (one full set through the Distributor, spawn included).
- bare cycle = median start -> events -> finished of the same trivial set on a
  second connection to the same agent, driven directly (bench/agent_rtt.py),
  while the machine idles. overhead = farm cycle / bare cycle (target <= 1.5).

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from agent_rtt import TRIVIAL, bare_exchange  # noqa: E402
from common import farm_config, percentile  # noqa: E402

from farm import Distributor  # noqa: E402
from farm.monitors import AbstractMonitor  # noqa: E402
from farm.monitors.fanout import FanoutMonitor  # noqa: E402
from farm.monitors.sqlite import SqliteMonitor  # noqa: E402
from farm.session import FarmSession  # noqa: E402
from farm.taskset import Task, TaskSet  # noqa: E402


class Recorder(AbstractMonitor):
    """Keeps (variant index, event) pairs and counts finished sets."""

    def __init__(self, expect: int) -> None:
        self.events: list[tuple[int, Any]] = []
        self.finished = 0
        self.expect = expect
        self.done = threading.Event()

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        self.events.append((taskset.index, event))

    def __taskset_finish__(self, taskset: Any) -> None:
        self.finished += 1
        if self.finished >= self.expect:
            self.done.set()


class SlowMonitor(AbstractMonitor):
    """Takes 5 ms per event: a monitor writing to a remote store."""

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        time.sleep(0.005)


def wait_idle(dist: Distributor, n: int, timeout: float = 600) -> list[dict[str, Any]]:
    """Wait until ``n`` machines are idle with a booted guest; return their info."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        idle = [m for m in dist.machines() if m["state"] == "idle"]
        if len(idle) >= n:
            return idle
        time.sleep(0.05)
    raise RuntimeError(f"machines not idle: {dist.machines()}")


def trivial_sets(n: int) -> TaskSet:
    return TaskSet([Task({**TRIVIAL, "x-run": range(n)})])


def set_instants(events: list[tuple[int, Any]]) -> dict[int, dict[str, float]]:
    """Per variant: release of its first job and its last JOBS_DONE (agent clock)."""
    out: dict[int, dict[str, float]] = {}
    for index, ev in events:
        d = out.setdefault(index, {})
        if ev.type == "START":
            rel = float(ev.extra.get("release", ev.timestamp))
            d["start"] = min(d.get("start", rel), rel)
        elif ev.type == "JOBS_DONE":
            d["done"] = max(d.get("done", ev.timestamp), ev.timestamp)
    return out


def ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values) * 1e3, 3),
        "p99": round(percentile(values, 99) * 1e3, 3),
        "max": round(max(values) * 1e3, 3),
        "n": len(values),
    }


def run(
    backend: str, sets: int, bare_sets: int, pings: int, monitor: str = "none"
) -> dict[str, Any]:
    """Boot one machine, run the trivial sets through it, then the bare exchange.

    ``monitor="sqlite"``: the job's monitor also stores every event in a
    SqliteMonitor (what ``farm run`` does); ``"slow"``: it also spends 5 ms on
    every event (a remote store).
    """
    with tempfile.TemporaryDirectory(prefix="farm-bench-dispatch-") as tmp:
        dist = Distributor(farm_config(tmp, backend, 1))
        try:
            warm = Recorder(3)
            t0 = time.perf_counter()
            dist.add_job(trivial_sets(3), warm)
            if not warm.done.wait(600):
                raise RuntimeError("warm-up sets did not finish")
            boot_and_3 = time.perf_counter() - t0
            (machine,) = wait_idle(dist, 1)
            rec = Recorder(sets)
            mon: Any = rec
            if monitor == "sqlite":
                mon = FanoutMonitor([rec, SqliteMonitor(Path(tmp) / "results.db")])
            elif monitor == "slow":
                mon = FanoutMonitor([rec, SlowMonitor()])
            t0 = time.perf_counter()
            dist.add_job(trivial_sets(sets), mon)
            if not rec.done.wait(1800):
                raise RuntimeError("sets did not finish")
            wall = time.perf_counter() - t0
            dist.wait_finished(60)
            wait_idle(dist, 1)
            host, port = machine["address"].rsplit(":", 1)
            session = FarmSession(host, int(port), token=dist.token)
            session.connect()
            try:
                bare = bare_exchange(session, bare_sets, pings)
            finally:
                session.close()
        finally:
            dist.close()
    inst = set_instants(rec.events)
    order = sorted(inst.values(), key=lambda d: d["done"])
    latency = [b["start"] - a["done"] for a, b in itertools.pairwise(order)]
    cycle = [b["done"] - a["done"] for a, b in itertools.pairwise(order)]
    farm_cycle = statistics.median(cycle)
    bare_cycle = bare["set_ms"]["median"] / 1e3
    return {
        "backend": backend,
        "monitor": monitor,
        "sets": sets,
        "dispatch_latency_ms": ms(latency),
        "farm_cycle_ms": ms(cycle),
        "farm_sets_per_s": round(sets / wall, 2),
        "bare": bare,
        "overhead_ratio": round(farm_cycle / bare_cycle, 3),
        "boot_plus_3_sets_s": round(boot_and_3, 3),
        "raw": {
            "latency_ms": [round(x * 1e3, 3) for x in latency],
            "cycle_ms": [round(x * 1e3, 3) for x in cycle],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="local")
    parser.add_argument("--sets", type=int, default=200)
    parser.add_argument("--bare-sets", type=int, default=100)
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--monitor", choices=("none", "sqlite", "slow"), default="none")
    parser.add_argument("--raw", action="store_true", help="include every latency (for plots)")
    args = parser.parse_args()
    doc = {
        "bench": "dispatch",
        **run(args.backend, args.sets, args.bare_sets, args.pings, args.monitor),
    }
    if not args.raw:
        doc.pop("raw")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
