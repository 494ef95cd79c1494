"""Warm start latency: QEMU start -> agent handshake for guests restored from a snapshot.

``bench/boot.py --warm`` uses :class:`WarmBoot` in place of its cold boot:
the snapshot is built once (a template guest, see farm.backend.snapshot),
then each "boot" starts QEMU with ``-incoming defer``, loads the snapshot,
hands the guest its identity (name, token) and times until the agent's
handshake. Run directly, this file alternates cold and warm boots in one
session (A/B interleaved, so the host's load drifts hit both alike) and
prints one JSON document with both::

    .venv/bin/python bench/boot_warm.py [--boots 10] [--profile '{"memory": 256}']
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import TOKEN, boot_once, percentile, start_qemu  # noqa: E402

from farm.agent.protocol import guest_key  # noqa: E402
from farm.backend import snapshot  # noqa: E402
from farm.image.smoke import Guest  # noqa: E402
from farm.profile import MachineProfile, default_profile  # noqa: E402
from farm.qemu import free_port  # noqa: E402


class WarmBoot:
    """Builds the snapshot of ``profile`` once; each call restores one guest from it."""

    def __init__(self, profile: MachineProfile, workdir: Path) -> None:
        t0 = time.monotonic()
        self.snap = snapshot.ensure(profile, workdir / "state")
        self.build_s = time.monotonic() - t0

    def info(self) -> dict[str, Any]:
        """What the JSON document says about the snapshot."""
        return {
            "snapshot_bytes": self.snap.size,
            "snapshot_build_s": round(self.build_s, 3),
            "how": "QEMU -incoming defer + getfd + migrate-incoming fd: + cont, identity "
            "over virtio-serial, then the agent handshake",
        }

    def __call__(self, profile: MachineProfile, workdir: Path, n: int) -> dict[str, Any]:
        """One restore: seconds to handshake, step times, QEMU RSS and CPU (as boot_once)."""
        run_dir = workdir / f"w{n}"
        run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = snapshot.guest_argv(profile, f"warm{n}", run_dir, hostfwd_port=port)
        console = run_dir / "console.log"
        qmp = run_dir / "qmp.sock"
        proc, pump, t0, marks = start_qemu(argv, console, qmp)
        guest = Guest(f"warm{n}", proc, port, console, qmp, t0, argv)
        try:
            key = guest_key(TOKEN, f"warm{n}")  # what farm hands each guest
            snapshot.restore(self.snap, run_dir, f"warm{n}", key, proc.alive, qmp=proc.qmp)
            marks["identity-ok"] = time.monotonic() - t0
            sock = guest.wait_for_agent(TOKEN, 60).sock
            latency = time.monotonic() - t0
            sock.close()
            qemu = psutil.Process(proc.pid)
            rss = qemu.memory_info().rss
            cpu = qemu.cpu_times()
        finally:
            guest.stop()
            pump.join(5)
        return {"latency": latency, "marks": marks, "rss": rss, "cpu_s": cpu.user + cpu.system}


def _summary(lat: list[float]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(lat), 3) if lat else None,
        "p90_s": round(percentile(lat, 90), 3) if lat else None,
        "min_s": round(min(lat), 3) if lat else None,
        "all": [round(x, 3) for x in lat],
    }


def main(argv: list[str] | None = None) -> int:
    """Interleaved cold/warm boots; print one JSON document."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--boots", type=int, default=10)
    ap.add_argument("--profile", default="{}", help="JSON overrides of the default profile")
    ap.add_argument("--image-dir", type=Path, default=REPO / "images")
    args = ap.parse_args(argv)
    base = default_profile(args.image_dir).to_dict()
    profile = MachineProfile.from_dict({**base, "accel": "tcg", **json.loads(args.profile)})
    cold: list[float] = []
    warm: list[float] = []
    failures: list[str] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="farm-bench-warm-") as tmp:
        booter = WarmBoot(profile, Path(tmp))
        for n in range(args.boots):
            for label, fn, out in (("cold", boot_once, cold), ("warm", booter, warm)):
                try:
                    out.append(fn(profile, Path(tmp), n)["latency"])
                except Exception as exc:  # a failed boot is a figure here, not the end
                    failures.append(f"{label} {n}: {str(exc)[:300]}")
        info = booter.info()
    doc = {
        "benchmark": "qemu start -> agent handshake, cold boot vs warm start, interleaved",
        "boots_each": args.boots,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cold": _summary(cold),
        "warm": {**_summary(warm), **info},
        "failures": failures,
        "profile": {k: v for k, v in profile.to_dict().items() if k in ("machine", "memory")},
    }
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
