"""Throughput with 1..7 machines on sleep-bound sets, idle CPU and host RSS per guest.

    .venv/bin/python bench/scaling.py [--backend local|qemu] [--machines 1 2 3 4 5 6 7]
                                      [--sleep-ms 1000] [--rounds 3] [--idle-s 10]
                                      [--warmup-rounds 3]

One Distributor for the whole run. For each machine count n (ascending) the
limit is raised to n and one short set per machine boots the new guests.
Once all n idle, a warm-up job of ``n * warmup_rounds`` of the measured sets
runs (each guest takes about ``warmup_rounds`` of them), and once they all
idle again, a job of ``n * rounds`` sets of one ``sleep`` job of
``--sleep-ms`` runs: throughput = sets / (add_job -> last set finished).

Why the warm-up: a freshly booted TCG guest's first set costs far more than
later ones (its START came ~0.48 s after dispatch on an otherwise idle host
instead of 15-30 ms: code paths run for the first time through the
translator, the guest's first touches of its RAM fault in the guest and on
the host). With one short set per machine, new guests often got none of it
(the old ones took them while they booted), and with 7 fresh guests that
one-time cost landed in the first measured round (STARTs 0.26-0.78 s after
dispatch). The steady state is what a farm running thousands of sets sees;
``--warmup-rounds 0`` measures the first job after boot instead.
Ideal is n / sleep. After the largest n, with every machine idle and booted:
the distributor process's CPU over ``--idle-s`` seconds (psutil; guest or
agent processes are not counted) and, for the qemu backend, the RSS of each
QEMU process beyond its guest RAM. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import farm_config  # noqa: E402
from dispatch import Recorder, wait_idle  # noqa: E402

from farm import Distributor  # noqa: E402
from farm.profile import load_profile  # noqa: E402
from farm.taskset import Task, TaskSet  # noqa: E402


def sleep_sets(n: int, ms: int) -> TaskSet:
    """``n`` sets of one job that sleeps ``ms`` milliseconds (no CPU).

    A shell ``sleep``, not the ``idle`` pkg: that one starts a Python process
    per job, which under TCG costs ~0.4 s of guest CPU and makes the sets
    CPU-bound, not sleep-bound.
    """
    command = f"sleep {ms / 1000:g}"
    return TaskSet([Task({"pkg": "shell", "config": {"command": command}, "x-run": range(n)})])


def run_job(dist: Distributor, taskset: TaskSet, n: int, timeout: float = 1800) -> float:
    """Add the job, wait for its ``n`` sets; seconds from add_job to the last finish."""
    rec = Recorder(n)
    t0 = time.perf_counter()
    dist.add_job(taskset, rec)
    if not rec.done.wait(timeout):
        raise RuntimeError(f"{n} sets did not finish in {timeout}s: {dist.jobs()}")
    elapsed = time.perf_counter() - t0
    dist.wait_finished(60)
    return elapsed


def guest_rss(memory_mib: int) -> dict[str, Any] | None:
    """RSS beyond guest RAM of the QEMU processes under this one (qemu backend)."""
    procs = [
        p for p in psutil.Process().children(recursive=True) if p.name().startswith("qemu-system")
    ]
    if not procs:
        return None
    rss = [p.memory_info().rss / 2**20 for p in procs]
    return {
        "guests": len(rss),
        "guest_ram_mib": memory_mib,
        "rss_mib_median": round(statistics.median(rss), 1),
        "beyond_guest_ram_mib_median": round(statistics.median(rss) - memory_mib, 1),
        "beyond_guest_ram_mib_max": round(max(rss) - memory_mib, 1),
    }


def run(
    backend: str,
    machines: list[int],
    sleep_ms: int,
    rounds: int,
    idle_s: float,
    warmup_rounds: int = 3,
) -> dict[str, Any]:
    """The scaling curve, then idle CPU and guest RSS with max(machines) booted."""
    top = max(machines)
    curve = []
    with tempfile.TemporaryDirectory(prefix="farm-bench-scaling-") as tmp:
        cfg = farm_config(tmp, backend, 1).replace(machine_cap=max(top, 1), max_concurrent_boots=2)
        dist = Distributor(cfg)
        try:
            for n in sorted(machines):
                dist.set_max_machine_value(n)
                run_job(dist, sleep_sets(n, 1), n)  # boots the new guests
                wait_idle(dist, n)
                if warmup_rounds:  # every guest up: each takes about warmup_rounds sets
                    warm = n * warmup_rounds
                    run_job(dist, sleep_sets(warm, sleep_ms), warm)
                    wait_idle(dist, n)
                sets = n * rounds
                elapsed = run_job(dist, sleep_sets(sets, sleep_ms), sets)
                curve.append(
                    {
                        "machines": n,
                        "sets": sets,
                        "seconds": round(elapsed, 3),
                        "sets_per_s": round(sets / elapsed, 3),
                        "ideal_sets_per_s": round(n * 1000 / sleep_ms, 3),
                    }
                )
            wait_idle(dist, top)
            proc = psutil.Process()
            proc.cpu_percent(None)
            time.sleep(idle_s)
            idle_cpu = proc.cpu_percent(None)
            memory = load_profile(cfg.profile, cfg.image_dir).memory
            rss = guest_rss(memory) if backend == "qemu" else None
        finally:
            dist.close()
    base = curve[0]["sets_per_s"] / curve[0]["machines"]
    for point in curve:
        point["speedup_vs_1"] = round(point["sets_per_s"] / base, 2)
    return {
        "backend": backend,
        "sleep_ms": sleep_ms,
        "rounds": rounds,
        "warmup_rounds": warmup_rounds,
        "curve": curve,
        "idle_cpu_percent": {"machines": top, "seconds": idle_s, "percent": round(idle_cpu, 2)},
        "guest_rss": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="local")
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7])
    parser.add_argument("--sleep-ms", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--warmup-rounds", type=int, default=3)
    args = parser.parse_args()
    doc = run(
        args.backend, args.machines, args.sleep_ms, args.rounds, args.idle_s, args.warmup_rounds
    )
    print(json.dumps({"bench": "scaling", **doc}, indent=2))


if __name__ == "__main__":
    main()
