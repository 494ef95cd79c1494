"""Fidelity: are jobs released on time? Release -> START latency and skipped/overrun shares.

    .venv/bin/python bench/fidelity.py [--guests 1,2] [--repeat 2] [--accel tcg|kvm|auto]

For the example experiment (``farm.tasksets.example.ExperimentTaskSet``, 9
variants of a periodic ``hey`` + ``pi`` pair, run ``--repeat`` times) and for a
cyclictest task set (one ``cyclictest`` task beside a periodic ``hey`` task,
``--cyclictest-sets`` variants), with each guest count of ``--guests`` (default
1 and as many as the host has cores), a Distributor boots the guests (a warm-up
set first, not measured) and a monitor keeps every event. Figures, per case:

- ``release_to_start_ms``: START's ``ts`` minus its ``release``, both on the
  agent's monotonic clock: how late the job's process started after its
  planned release (scheduler wake-up + spawn). median, p99, max, n.
  ``first_jobs_ms`` / ``later_jobs_ms``: the same for the sets' jobs 0 / the others.
- ``jobs``: counts of the job events (START, EXIT, EXIT_CRITICAL, EXIT_PERIOD,
  NOT_SCHEDULED, ...) and ``share`` = count / planned jobs (``planned`` = the
  sets' jobs: every job ends as NOT_SCHEDULED or after a START).
- cyclictest only: ``cyclictest_us`` = the jobs' own min/avg/max wake-up
  latency in microseconds (the EXIT events' ``latency_us``), median and max.

Percentiles are nearest-rank (``sorted[ceil(p/100*n)-1]``; bench/common.py did
not exist yet). Uses the public API only and the ``farm`` on ``PYTHONPATH``,
with that checkout's guest image, so ``bench/compare.py --script-from after``
can run it against an older checkout; a checkout without the ``cyclictest``
pkg gets ``"skipped"`` for those cases. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from stats import percentile

import farm
from farm import AbstractMonitor, Distributor, FarmConfig, Task, TaskSet
from farm.agent.protocol import JOB_EXIT_TYPES
from farm.tasksets.example import ExperimentTaskSet

JOB_TYPES = ("START", *JOB_EXIT_TYPES)  # the agent's own taxonomy
IMAGES = Path(farm.__file__).resolve().parents[1] / "images"


class Recorder(AbstractMonitor):
    """Keeps every event and counts finished sets."""

    def __init__(self, expect: int) -> None:
        self.events: list[Any] = []
        self.finished = 0
        self.expect = expect
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def __taskset_finish__(self, taskset: Any) -> None:
        with self._lock:
            self.finished += 1
            if self.finished >= self.expect:
                self.done.set()


def has_cyclictest() -> bool:
    """True if the imported farm knows the ``cyclictest`` pkg."""
    from farm.agent import pkgs

    return "cyclictest" in getattr(pkgs, "PROGRAM_PKGS", ())


def cyclictest_set(sets: int, loops: int) -> TaskSet:
    """``sets`` variants of: cyclictest (SCHED_FIFO 80, 1 ms) beside a 100 ms ``hey`` task."""
    ts = TaskSet()
    ts.append(
        Task(
            {
                "id": 1,
                "pkg": "cyclictest",
                "config": {"loops": loops, "interval_us": 1000, "priority": 80},
                "numberofjobs": 1,
                "x-run": range(sets),
            }
        )
    )
    jobs = max(1, loops // 100)  # as long as cyclictest runs
    ts.append(Task({"id": 2, "pkg": "hey", "priority": 50, "period": 100, "numberofjobs": jobs}))
    return ts


def planned_jobs(taskset: TaskSet) -> int:
    """Jobs the set's variants plan in all (numberofjobs summed over tasks and variants)."""
    total = 0
    for variant in taskset.variants():
        total += sum(int(task.get("numberofjobs", 1)) for task in variant.tasks)
    return total


def ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "median": round(statistics.median(values) * 1e3, 3),
        "p99": round(percentile(values, 99) * 1e3, 3),
        "max": round(max(values) * 1e3, 3),
        "n": len(values),
    }


def figures(events: list[Any], planned: int) -> dict[str, Any]:
    """The case's figures from its events (see the module docstring)."""
    starts = [ev for ev in events if str(ev.type) == "START" and "release" in ev.extra]
    lat = [ev.timestamp - float(ev.extra["release"]) for ev in starts]
    first = [ev.timestamp - float(ev.extra["release"]) for ev in starts if ev.job == 0]
    later = [ev.timestamp - float(ev.extra["release"]) for ev in starts if ev.job != 0]
    counts = {t: sum(1 for ev in events if str(ev.type) == t) for t in JOB_TYPES}
    out: dict[str, Any] = {
        "release_to_start_ms": ms(lat),
        # a set's first jobs (job 0 of each task) apart from the later ones: their tail differs
        "first_jobs_ms": ms(first),
        "later_jobs_ms": ms(later),
        "planned_jobs": planned,
        "jobs": counts,
        "share": {t: round(counts[t] / planned, 4) if planned else None for t in JOB_TYPES},
    }
    cyc = [ev.extra["latency_us"] for ev in events if "latency_us" in ev.extra]
    if cyc:
        out["cyclictest_us"] = {
            key: {
                "median": statistics.median(c[key] for c in cyc),
                "max": max(c[key] for c in cyc),
            }
            for key in ("min", "avg", "max")
        }
    return out


def run_case(dist: Distributor, taskset: TaskSet, timeout: float) -> dict[str, Any]:
    """Run one task set through the booted farm; its figures."""
    variants = taskset.variant_count() or 0
    rec = Recorder(variants)
    t0 = time.monotonic()
    dist.add_job(taskset, rec)
    if not rec.done.wait(timeout):
        raise RuntimeError(f"{rec.finished} of {variants} sets finished in {timeout} s")
    doc = figures(rec.events, planned_jobs(taskset))
    doc["sets"] = variants
    doc["wall_s"] = round(time.monotonic() - t0, 2)
    return doc


def experiment(repeat: int) -> TaskSet:
    """The example experiment's 9 variants, ``repeat`` times (an extra dimension)."""
    ts = ExperimentTaskSet()
    if repeat > 1:
        first = ts.tasks[0]
        first["x-repeat"] = range(repeat)
    return ts


def run_guests(guests: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="farm-bench-fidelity-") as tmp:
        profile: dict[str, Any] = {"accel": args.accel} if args.accel != "auto" else {}
        if args.machine:
            profile["machine"] = args.machine
        cfg = FarmConfig(
            backend=args.backend,
            state_dir=Path(tmp) / "state",
            log_dir=Path(tmp) / "log",
            image_dir=IMAGES,
            max_machines=guests,
            max_concurrent_boots=guests,
            idle_linger=600.0,
            journal=False,
            profile=profile,
        )
        dist = Distributor(cfg)
        try:
            warm = TaskSet([Task({"pkg": "hey", "x-run": range(2 * guests)})])
            run_case(dist, warm, args.timeout)  # boots the guests; not measured
            out: dict[str, Any] = {
                "experiment": run_case(dist, experiment(args.repeat), args.timeout)
            }
            if args.cyclictest_sets <= 0:
                out["cyclictest"] = "skipped: --cyclictest-sets 0"
            elif has_cyclictest():
                cyc = cyclictest_set(args.cyclictest_sets * guests, args.cyclictest_loops)
                out["cyclictest"] = run_case(dist, cyc, args.timeout)
            else:
                out["cyclictest"] = "skipped: this farm has no cyclictest pkg"
        finally:
            dist.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="qemu")
    # TCG by default: "auto" may fall back from KVM to TCG between runs on a busy host
    parser.add_argument("--accel", default="tcg", choices=("auto", "kvm", "tcg"))
    parser.add_argument("--machine", default="", help="QEMU board (default: the profile's)")
    parser.add_argument("--guests", default=f"1,{os.cpu_count() or 1}")
    parser.add_argument("--repeat", type=int, default=2, help="runs of the experiment's variants")
    parser.add_argument("--cyclictest-sets", type=int, default=2, help="per guest")
    parser.add_argument("--cyclictest-loops", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600, help="s per task set")
    args = parser.parse_args()
    counts = sorted({int(g) for g in args.guests.split(",") if g.strip()})
    t0 = time.monotonic()
    cases = {f"guests_{g}": run_guests(g, args) for g in counts}
    doc = {
        "bench": "fidelity",
        "farm": str(Path(farm.__file__).resolve().parent),
        "backend": args.backend,
        "accel": args.accel,
        "machine": args.machine or "default",
        "percentile": "nearest-rank",
        **cases,
        "took_s": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
