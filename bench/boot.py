"""Boot latency of the guest image: QEMU start -> agent handshake, over several boots.

Prints one JSON document: median/min/max/stdev of the handshake latency, the
moment each ``farm-init:`` step appeared on the console (medians), image
sizes, and QEMU's RSS next to the guest RAM size.

    .venv/bin/python bench/boot.py [--boots 5] [--profile '{"machine": "q35"}']
                                   [--kernel-args-extra "..."] [--build]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from farm.image import build  # noqa: E402
from farm.image.smoke import Guest, free_port  # noqa: E402
from farm.profile import MachineProfile, default_profile  # noqa: E402

TOKEN = "bench-token"


def _pump(stream: Any, log: Path, t0: float, marks: dict[str, float]) -> None:
    """Copy the serial console to ``log``, noting when each farm-init step appeared."""
    with log.open("wb") as out:
        for line in iter(stream.readline, b""):
            out.write(line)
            out.flush()
            text = line.decode(errors="replace")
            if "farm-init: " in text:
                step = text.split("farm-init: ", 1)[1].split()[0].rstrip(":")
                marks.setdefault(step, time.monotonic() - t0)
            elif "farm-agent listening" in text:
                marks.setdefault("agent-listening", time.monotonic() - t0)


def boot_once(profile: MachineProfile, workdir: Path, n: int) -> dict[str, Any]:
    """One boot: seconds to handshake, console step times, QEMU RSS."""
    port = free_port()
    qmp = workdir / f"b{n}.qmp"
    console = workdir / f"b{n}.console.log"
    argv = profile.qemu_argv(
        f"bench{n}", hostfwd_port=port, token=TOKEN, console="stdio", qmp_socket=qmp
    )
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
    )
    pump = threading.Thread(target=_pump, args=(proc.stdout, console, t0, marks), daemon=True)
    pump.start()
    guest = Guest(f"bench{n}", proc, port, console, qmp, t0, argv)  # type: ignore[arg-type]
    try:
        sock, _hello = guest.wait_for_agent(TOKEN, 120)
        latency = time.monotonic() - t0
        sock.close()
        rss = psutil.Process(proc.pid).memory_info().rss
    finally:
        guest.stop()
        pump.join(5)
    return {"latency": latency, "marks": marks, "rss": rss}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON document."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--boots", type=int, default=7)
    ap.add_argument("--profile", default="{}", help="JSON overrides of the default profile")
    ap.add_argument("--kernel-args-extra", default="")
    ap.add_argument("--image-dir", type=Path, default=REPO / "images")
    ap.add_argument("--build", action="store_true", help="build (or reuse) the image first")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.build:
        build(out_dir=args.image_dir)
    base = default_profile(args.image_dir).to_dict()
    overrides = json.loads(args.profile)
    profile = MachineProfile.from_dict({**base, "accel": "tcg", **overrides})
    if args.kernel_args_extra:
        profile = MachineProfile.from_dict(
            {**profile.to_dict(), "kernel_args": f"{profile.kernel_args} {args.kernel_args_extra}"}
        )
    runs = []
    with tempfile.TemporaryDirectory(prefix="farm-bench-boot-") as tmp:
        for n in range(args.boots):
            runs.append(boot_once(profile, Path(tmp), n))
    lat = [r["latency"] for r in runs]
    steps = sorted({k for r in runs for k in r["marks"]}, key=lambda k: runs[0]["marks"].get(k, 99))
    rss = [r["rss"] / 2**20 for r in runs]
    doc = {
        "benchmark": "qemu start -> agent handshake",
        "boots": len(runs),
        "latency_s": {
            "median": round(statistics.median(lat), 3),
            "min": round(min(lat), 3),
            "max": round(max(lat), 3),
            "stdev": round(statistics.stdev(lat), 3) if len(lat) > 1 else 0.0,
            "all": [round(x, 3) for x in lat],
        },
        "console_steps_median_s": {
            k: round(statistics.median([r["marks"][k] for r in runs if k in r["marks"]]), 3)
            for k in steps
        },
        "image_bytes": {
            "kernel": profile.kernel.stat().st_size,
            "initrd": profile.initrd.stat().st_size if profile.initrd else 0,
        },
        "qemu_rss_mib": {
            "median": round(statistics.median(rss), 1),
            "guest_ram_mib": profile.memory,
            "rss_minus_guest_ram_mib": round(statistics.median(rss) - profile.memory, 1),
        },
        "profile": {
            k: v for k, v in profile.to_dict().items() if k in ("machine", "cpu", "memory", "accel")
        },
        "kernel_args": profile.kernel_args,
    }
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
