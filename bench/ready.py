"""Boot-to-ready through farm's own backends: spawn -> address -> authenticated session.

    .venv/bin/python bench/ready.py [--backend qemu|libvirt|local] [--boots 10] [--cold]

Each boot does what a Machine does (``Machine._spawn_and_attach``): the
backend spawns a guest, its address is awaited and a FarmSession with the
Distributor's dialling settings connects and authenticates. One guest at a
time; it is destroyed before the next. Unlike ``bench/boot.py`` (raw QEMU
argv), this includes the backend's own work (libvirt domain definition,
port allocation, state files). Prints one JSON document with median/p90 and
the guest process's RSS beyond its RAM (where the backend exposes a pid).

Each run starts on a fresh state dir, and its first boot is reported apart
(``first_boot_s``), not in the median/p90 of the ``--boots`` that follow:
on the libvirt backend it includes libvirt's one-time probe of the QEMU
binary's capabilities (~4 s here), which libvirt caches in the state dir for
every later farm run. ``--cold``: ``warm_start = false`` (every guest boots
its kernel; the default restores warm-start snapshots where the backend can).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import farm_config, percentile  # noqa: E402

from farm.backend import create  # noqa: E402
from farm.profile import load_profile  # noqa: E402
from farm.session import FarmSession  # noqa: E402
from farm.session.token import resolve_token  # noqa: E402


def boot_once(backend: Any, token: str, timeout: float = 180.0) -> dict[str, Any]:
    """One guest: seconds from spawn() to an authenticated session, and its RSS."""
    t0 = time.perf_counter()
    guest = backend.spawn("qemu1", token)
    try:
        deadline = time.monotonic() + timeout
        host, port = guest.address(timeout)
        session = FarmSession(
            host,
            port,
            token=token,
            connect_attempts=100_000,
            retry_wait=0.02,
            retry_wait_max=0.05,
        )
        session.connect(timeout=max(0.5, deadline - time.monotonic()), alive=guest.alive)
        ready = time.perf_counter() - t0
        session.close()
        rss = None
        if guest.pid is not None:
            try:
                rss = psutil.Process(guest.pid).memory_info().rss / 2**20
            except psutil.Error:
                rss = None
    finally:
        guest.destroy()
    return {"ready_s": ready, "rss_mib": rss}


def run(backend_name: str, boots: int, cold: bool = False) -> dict[str, Any]:
    """``boots`` sequential boots on a fresh farm state dir (``cold``: no warm start)."""
    with tempfile.TemporaryDirectory(prefix="farm-bench-ready-") as tmp:
        cfg = farm_config(tmp, backend_name, 1)
        if cold:
            cfg = replace(cfg, warm_start=False)
        backend = create(cfg)
        try:
            backend.check()
            token = resolve_token(cfg.token, cfg.state_dir)
            first = boot_once(backend, token)
            runs = [boot_once(backend, token) for _ in range(boots)]
        finally:
            backend.close()
    lat = [r["ready_s"] for r in runs]
    rss = [r["rss_mib"] for r in runs if r["rss_mib"] is not None]
    doc: dict[str, Any] = {
        "backend": backend_name,
        "boots": boots,
        "warm_start": cfg.warm_start,
        "first_boot_s": round(first["ready_s"], 3),
        "ready_s": {
            "median": round(statistics.median(lat), 3),
            "p90": round(percentile(lat, 90), 3),
            "min": round(min(lat), 3),
            "max": round(max(lat), 3),
            "all": [round(x, 3) for x in lat],
        },
    }
    if rss and backend_name != "local":
        memory = load_profile(cfg.profile, cfg.image_dir).memory
        doc["rss_beyond_guest_ram_mib"] = round(statistics.median(rss) - memory, 1)
        doc["guest_ram_mib"] = memory
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="qemu")
    parser.add_argument("--boots", type=int, default=10)
    parser.add_argument("--cold", action="store_true", help="warm_start = false")
    args = parser.parse_args()
    print(json.dumps({"bench": "ready", **run(args.backend, args.boots, args.cold)}, indent=2))


if __name__ == "__main__":
    main()
