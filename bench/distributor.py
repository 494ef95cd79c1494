"""Benchmark the Distributor on real guests: first-event latency, scaling, idle CPU.

    .venv/bin/python bench/distributor.py [--backend qemu|libvirt|local] [--sets 12]

Prints one JSON document:
- ``add_job_to_first_event_s``: from add_job() to the first event reaching the
  monitor, guests already booted (dispatch path only) and cold (incl. boot);
- ``throughput``: task sets per second for a sleep-bound set (one ``idle``
  job of ``--sleep-ms``) with 1, 2, 3 machines, and the ratio to 1 machine;
- ``idle_cpu_percent``: the distributor process's CPU while N machines sit
  idle with booted guests (guest QEMU CPU is not counted).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import farm_config  # noqa: E402

from farm import Distributor  # noqa: E402
from farm.monitors import AbstractMonitor  # noqa: E402
from farm.taskset import Task, TaskSet  # noqa: E402


class FirstEvent(AbstractMonitor):
    """Records when the first event and each finish arrive."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.finished = 0
        self.done = threading.Event()
        self.expect = 0

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def __taskset_finish__(self, taskset: Any) -> None:
        self.finished += 1
        if self.finished >= self.expect:
            self.done.set()


def sleep_sets(n: int, ms: int) -> TaskSet:
    return TaskSet([Task({"pkg": "idle", "config": {"ms": ms}, "x-run": range(n)})])


def wait_ready(dist: Distributor, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [m for m in dist.machines() if m["state"] == "idle"]
        if len(ready) >= n:
            return
        time.sleep(0.05)
    raise RuntimeError(f"machines not ready: {dist.machines()}")


def run(backend: str, machines: int, sets: int, sleep_ms: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        dist = Distributor(farm_config(tmp, backend, machines))
        try:
            # cold: includes boots
            mon = FirstEvent()
            mon.expect = machines
            t0 = time.perf_counter()
            dist.add_job(sleep_sets(machines, 1), mon)
            mon.done.wait(600)
            cold = (mon.first or t0) - t0
            wait_ready(dist, machines)
            # warm first-event latency (dispatch only), median of 5
            warm = []
            for _ in range(5):
                mon = FirstEvent()
                mon.expect = 1
                t0 = time.perf_counter()
                dist.add_job(sleep_sets(1, 1), mon)
                mon.done.wait(120)
                warm.append((mon.first or t0) - t0)
            wait_ready(dist, machines)
            proc = psutil.Process()
            proc.cpu_percent(None)
            time.sleep(5.0)
            idle_cpu = proc.cpu_percent(None)
            # throughput, machines already up
            mon = FirstEvent()
            mon.expect = sets
            t0 = time.perf_counter()
            dist.add_job(sleep_sets(sets, sleep_ms), mon)
            mon.done.wait(1800)
            elapsed = time.perf_counter() - t0
        finally:
            dist.close()
    warm.sort()
    return {
        "machines": machines,
        "cold_first_event_s": round(cold, 3),
        "warm_first_event_s_median": round(warm[len(warm) // 2], 4),
        "idle_cpu_percent": round(idle_cpu, 2),
        "sets": sets,
        "sets_per_s": round(sets / elapsed, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="qemu")
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--sets", type=int, default=12)
    parser.add_argument("--sleep-ms", type=int, default=1000)
    args = parser.parse_args()
    results = [run(args.backend, n, args.sets, args.sleep_ms) for n in args.machines]
    base = results[0]["sets_per_s"]
    for r in results:
        r["scaling_vs_1"] = round(r["sets_per_s"] / base, 2) if base else None
    print(
        json.dumps(
            {"bench": "farm", "backend": args.backend, "sleep_ms": args.sleep_ms, "runs": results},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
