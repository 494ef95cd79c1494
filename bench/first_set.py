"""The first set on a fresh guest vs later ones: how much farm's own start-up costs it.

    PYTHONPATH=. .venv/bin/python bench/first_set.py [--guests 5] [--sets 4] [--cold]

For each of ``--guests`` fresh guests (restored from the warm-start template
unless ``--cold``): connect a FarmSession, then run ``--sets`` trivial sets
(one ``hey`` job) one after the other, each timed on the host from
``session.start`` to its JOBS_DONE. Prints one JSON document: the first
set's and the later sets' medians over the guests, and their difference
(issue 18's target: the first within 50 ms of a later one).

Before each spawn the backend is let settle, untimed, as in bench/warm.py (the
qemu and libvirt backends make their next spare guest in the background after
a warm spawn: a farm respawns a guest long after the previous spawn);
``--back-to-back`` spawns right after the previous destroy instead (the spare
may still be in the making, or the spawn restores without one).
``from_spare`` counts the spawns a spare served (the first spawn never: it
builds the template and starts the first spare); ``first_set_each_ms`` lists
each guest's first set and whether it was made of a spare.

``first_phases_ms`` / ``later_phases_ms`` split those sets (medians) with the
agent's own event times, put on the host's clock by the ``time`` op (asked
after the sets, so it warms nothing up; the sample of least round trip):
``to_start`` (start sent -> the job's START: request, validation, spawn),
``job`` (START -> the job's end: exec and run of the job itself) and
``to_done`` (the job's end -> JOBS_DONE received: reaping, events, their
write and transport).
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

import farm  # the checkout on PYTHONPATH, before common puts this script's own first

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (stats, common)

from common import farm_config, percentile

IMAGES = Path(farm.__file__).resolve().parents[1] / "images"

TRIVIAL = {"id": 1, "pkg": "hey", "numberofjobs": 1, "period": 0, "priority": 10}


def one_set(session: Any, timeout: float = 60.0) -> float:
    """Seconds from start to JOBS_DONE of one trivial set."""
    return timed_set(session, timeout)["total"]


def timed_set(session: Any, timeout: float = 60.0) -> dict[str, float]:
    """One trivial set: ``total`` s, and the host/agent times its phases are made of."""
    from farm.taskset import Task, TaskSet

    times: dict[str, float] = {}
    t0 = time.monotonic()
    session.start(TaskSet([Task(dict(TRIVIAL))]))
    deadline = t0 + timeout
    while not session.finished():
        if time.monotonic() > deadline:
            raise RuntimeError("trivial set did not finish")
        for event in session.run(1.0):
            if event.type.name == "START":
                times["start"] = event.timestamp
            elif event.is_exit and "end" in event.extra:
                times["end"] = float(event.extra["end"])
    times["total"] = time.monotonic() - t0
    times["sent"], times["done"] = t0, t0 + times["total"]
    return times


def clock_offset(session: Any, samples: int = 5, clock: Any = time.monotonic) -> float:
    """Agent monotonic clock minus the host's, from the ``time`` op of least round trip."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = clock()
        agent = float(session.call("time", {})["monotonic"])
        after = clock()
        if best is None or after - before < best[0]:
            best = (after - before, agent - (before + after) / 2)
    assert best is not None
    return best[1]


def phases(times: dict[str, float], offset: float) -> dict[str, float] | None:
    """``to_start``, ``job`` and ``to_done`` of one set in s (None without START or end)."""
    if "start" not in times or "end" not in times:
        return None
    return {
        "to_start": times["start"] - offset - times["sent"],
        "job": times["end"] - times["start"],
        "to_done": times["done"] + offset - times["end"],
    }


def _medians(split: list[dict[str, float]]) -> dict[str, float]:
    if not split:
        return {}
    return {
        k: round(statistics.median(p[k] for p in split) * 1e3, 1)
        for k in ("to_start", "job", "to_done")
    }


def spares_of(backend: Any) -> Any:
    """The backend's spare maker (qemu: ``spares``, libvirt: ``warm.spares``), or None."""
    found = getattr(backend, "spares", None)
    return found if found is not None else getattr(getattr(backend, "warm", None), "spares", None)


def measure(
    backend_name: str, guests: int, sets: int, warm: bool, back_to_back: bool = False
) -> dict[str, Any]:
    from farm.backend import create
    from farm.session.agent import FarmSession
    from farm.session.token import resolve_token

    firsts: list[float] = []
    laters: list[float] = []
    first_split: list[dict[str, float]] = []
    later_split: list[dict[str, float]] = []
    via: list[bool] = []  # each guest: made of a spare
    with tempfile.TemporaryDirectory(prefix="farm-bench-first-") as tmp:
        cfg = farm_config(tmp, backend_name, 1).replace(image_dir=IMAGES, warm_start=warm)
        backend = create(cfg)
        try:
            backend.check()
            token = resolve_token(cfg.token, cfg.state_dir)
            spares = spares_of(backend)
            for _ in range(guests):
                if spares is not None and not back_to_back:
                    spares.wait_ready(120.0)  # untimed: a settled farm
                used = spares.used if spares is not None else 0
                guest = backend.spawn("qemu1", token)
                via.append(spares is not None and spares.used > used)
                try:
                    host, port = guest.address(180.0)
                    session = FarmSession(host, port, token=token, connect_attempts=100_000)
                    session.connect(timeout=180.0, alive=guest.alive)
                    try:
                        runs = [timed_set(session) for _ in range(sets)]
                        offset = clock_offset(session)
                    finally:
                        session.close()
                finally:
                    guest.destroy()
                times = [run["total"] for run in runs]
                firsts.append(times[0])
                laters.extend(times[1:])
                split = [phases(run, offset) for run in runs]
                first_split += [p for p in split[:1] if p is not None]
                later_split += [p for p in split[1:] if p is not None]
        finally:
            backend.close()
    first, later = statistics.median(firsts), statistics.median(laters)
    return {
        "bench": "first_set",
        "backend": backend_name,
        "warm_start": warm,
        "back_to_back": back_to_back,
        **({"from_spare": spares.used} if spares is not None else {}),
        "guests": guests,
        "sets_per_guest": sets,
        "first_set_ms": {"median": round(first * 1e3, 1), "max": round(max(firsts) * 1e3, 1)},
        "later_set_ms": {
            "median": round(later * 1e3, 1),
            "p90": round(percentile(laters, 90) * 1e3, 1),
        },
        "first_minus_later_ms": round((first - later) * 1e3, 1),
        "first_set_each_ms": [
            {"spare": spare, "first": round(t * 1e3, 1)}
            for spare, t in zip(via, firsts, strict=True)
        ],
        "first_phases_ms": _medians(first_split),
        "later_phases_ms": _medians(later_split),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guests", type=int, default=5)
    ap.add_argument("--sets", type=int, default=4, help="sets per guest (>= 2)")
    ap.add_argument("--backend", default="qemu")
    ap.add_argument("--cold", action="store_true", help="cold boots instead of warm starts")
    ap.add_argument(
        "--back-to-back",
        action="store_true",
        help="spawn right after the previous destroy (do not let the backend settle)",
    )
    args = ap.parse_args()
    if args.sets < 2 or args.guests < 1:
        ap.error("--sets must be >= 2 and --guests >= 1")
    doc = measure(args.backend, args.guests, args.sets, not args.cold, args.back_to_back)
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
