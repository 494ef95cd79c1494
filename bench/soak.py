"""Soak: a farm running a stream of short sets; the distributor's RSS and fds over time.

    .venv/bin/python bench/soak.py --minutes 30 --machines 7     # full size
    .venv/bin/python bench/soak.py --seconds 90 --machines 3     # CI size

The Distributor runs in this process (qemu backend by default). A feeder
keeps two jobs of short sleep-bound sets queued (a new job whenever one ends;
``--monitor-per-job`` gives each job its own SqliteMonitor, else they share
one), so jobs come and go the way a long experiment campaign adds them. Every
``--interval`` seconds the process's RSS, open fds and threads are sampled.
Prints one JSON document: the series, and growth from the end of the warm-up
(``--warmup`` s, default 20 % of the run) to the end of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from farm import Distributor  # noqa: E402
from farm.config import FarmConfig  # noqa: E402
from farm.monitors import AbstractMonitor, FanoutMonitor, SqliteMonitor  # noqa: E402
from farm.taskset import Task, TaskSet  # noqa: E402


def short_sets(n: int, ms: int) -> TaskSet:
    """``n`` variants of one task sleeping ``ms`` in the guest."""
    return TaskSet(
        [Task({"pkg": "idle", "config": {"ms": ms}, "numberofjobs": 1, "x-run": range(n)})]
    )


class Counter(AbstractMonitor):
    """Counts finished sets (dist.jobs() may forget old jobs)."""

    def __init__(self) -> None:
        self.finished = 0
        self.stopped = 0

    def __taskset_finish__(self, taskset: Any) -> None:
        self.finished += 1

    def __taskset_stop__(self, taskset: Any) -> None:
        self.stopped += 1


def sample(proc: psutil.Process, t0: float, dist: Distributor, counter: Counter) -> dict[str, Any]:
    """One point of the series: time, RSS (KiB), fds, threads, sets finished so far."""
    return {
        "t": round(time.monotonic() - t0, 2),
        "rss_kib": proc.memory_info().rss // 1024,
        "fds": proc.num_fds(),
        "threads": proc.num_threads(),
        "sets_finished": counter.finished,
        "sets_stopped": counter.stopped,
        "machines": len(dist.machines()),
    }


def growth(series: list[dict[str, Any]], key: str, warmup: float) -> dict[str, Any]:
    """Baseline = median of the first 3 samples after warm-up; end = median of the last 3."""
    after = [s[key] for s in series if s["t"] >= warmup] or [s[key] for s in series]
    base = statistics.median(after[:3])
    end = statistics.median(after[-3:])
    return {
        "baseline": base,
        "end": end,
        "max": max(after),
        "growth": end - base,
        "growth_percent": round(100.0 * (end - base) / base, 2) if base else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="overrides --minutes")
    parser.add_argument("--machines", type=int, default=7)
    parser.add_argument("--backend", default="qemu", choices=["qemu", "libvirt", "local"])
    parser.add_argument("--sleep-ms", type=int, default=300, help="length of each set")
    parser.add_argument("--job-size", type=int, default=0, help="sets per job (0: 4 x machines)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None, help="s excluded from growth")
    parser.add_argument("--monitor-per-job", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    parser.add_argument("--image-dir", type=Path, default=ROOT / "images")
    args = parser.parse_args(argv)
    duration = args.seconds if args.seconds is not None else 60.0 * (args.minutes or 30.0)
    warmup = args.warmup if args.warmup is not None else 0.2 * duration
    job_size = args.job_size or 4 * args.machines

    work = args.dir or Path(tempfile.mkdtemp(prefix="soak"))
    cfg = FarmConfig(
        backend=args.backend,
        state_dir=work / "state",
        log_dir=work / "log",
        image_dir=args.image_dir,
        idle_linger=2.0,
        boot_timeout=180.0,
        set_tries=20,
        profile={"accel": os.environ.get("FARM_SOAK_ACCEL", "tcg"), "memory": 256},
    )
    proc = psutil.Process()
    dist = Distributor(cfg)
    counter = Counter()
    shared = FanoutMonitor([SqliteMonitor(work / "results.db"), counter])
    stop = threading.Event()
    jobs_added = 0
    series: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def feeder() -> None:
        nonlocal jobs_added
        while not stop.is_set():
            pending = [j for j in dist.jobs() if not j.get("done")]
            while len(pending) < 2 and not stop.is_set():
                monitor = (
                    FanoutMonitor([SqliteMonitor(work / "results.db"), counter])
                    if args.monitor_per_job
                    else shared
                )
                dist.add_job(short_sets(job_size, args.sleep_ms), monitor, name=f"soak{jobs_added}")
                jobs_added += 1
                pending.append({})
            stop.wait(0.5)

    thread = threading.Thread(target=feeder, name="soak-feeder", daemon=True)
    try:
        dist.set_max_machine_value(args.machines)
        thread.start()
        while True:
            series.append(sample(proc, t0, dist, counter))
            if time.monotonic() - t0 >= duration:
                break
            time.sleep(min(args.interval, max(0.0, duration - (time.monotonic() - t0))))
    finally:
        stop.set()
        thread.join(10)
        dist.close()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    after_close = {"fds": proc.num_fds(), "threads": proc.num_threads()}
    finished = series[-1]["sets_finished"]
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "backend": args.backend,
        "machines": args.machines,
        "seconds": round(duration, 1),
        "warmup_s": round(warmup, 1),
        "jobs_added": jobs_added,
        "sets_finished": finished,
        "sets_per_s": round(finished / duration, 3) if duration else None,
        "load_avg": os.getloadavg(),
        "rss": growth(series, "rss_kib", warmup),
        "fds": growth(series, "fds", warmup),
        "threads": growth(series, "threads", warmup),
        "after_close": after_close,
        "series": series,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
