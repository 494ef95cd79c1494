"""Cost of the hang watch: CPU the BootWatch threads of idle guests take, and how fast
they report a SIGKILLed and a SIGSTOPped guest process.

    .venv/bin/python bench/hangwatch.py [--guests 7] [--seconds 20]
    .venv/bin/python bench/compare.py --before ../farm-old --script-from after -- hangwatch.py

Each "guest" is a host ``sleep`` process behind a :class:`farm.backend.base.Guest`
whose ``alive()`` is the qemu backend's check (process there, not a zombie, not
stopped); one BootWatch per guest, booted, default polls. Prints JSON: CPU
percent of one core for all the watches together while idle, and the seconds from
SIGKILL / SIGSTOP of a guest process to its report. Does not put its own checkout
on ``sys.path`` (compare.py --script-from after).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import threading
import time
from typing import Any

import psutil

from farm.backend.base import Guest, pid_stopped
from farm.core.bootwatch import BootClock, BootWatch


class SleepGuest(Guest):
    """A host process standing in for a QEMU; alive() as the qemu backend asks it."""

    def __init__(self, n: int) -> None:
        self.name = f"hw{n}"
        self.proc = subprocess.Popen(["sleep", "3600"])

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def address(self, timeout: float) -> tuple[str, int]:
        return "127.0.0.1", 0

    def alive(self) -> bool:
        try:
            there = psutil.Process(self.proc.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        return there and not pid_stopped(self.proc.pid)

    def destroy(self) -> None:
        self.proc.kill()
        self.proc.wait()


def detect(sig: signal.Signals) -> float:
    """Seconds from ``sig`` to the watch's report for one booted guest."""
    guest = SleepGuest(99)
    seen = threading.Event()
    watch = BootWatch(guest, BootClock(), lambda _r, _b: seen.set(), time.monotonic())
    watch.start()
    watch.booted()
    time.sleep(0.3)
    t0 = time.monotonic()
    guest.proc.send_signal(sig)
    seen.wait(30)
    elapsed = time.monotonic() - t0
    watch.stop()
    guest.destroy()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    guests = [SleepGuest(n) for n in range(args.guests)]
    watches = [BootWatch(g, BootClock(), lambda _r, _b: None, time.monotonic()) for g in guests]
    try:
        for watch in watches:
            watch.start()
            watch.booted()
        time.sleep(1.0)  # past the first polls
        cpu0, t0 = time.process_time(), time.monotonic()
        time.sleep(args.seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    finally:
        for watch in watches:
            watch.stop()
        for guest in guests:
            guest.destroy()
    report: dict[str, Any] = {
        "guests": args.guests,
        "idle_cpu_percent": round(100 * cpu / wall, 4),
        "sigkill_detect_s": round(detect(signal.SIGKILL), 3),
        "sigstop_detect_s": round(detect(signal.SIGSTOP), 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
