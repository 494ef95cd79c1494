"""Which guest code fills a restored guest's TCG translation buffer (issue 18's memory).

An idle restored guest's largest private memory is QEMU's translation buffer
(bench/rss.py ``last_guest_private.tcg_tb``): host code for every block of guest
code it ran since its restore. This bench restores one guest (qemu backend, user
network, TCG, RAM shared with the template as farm does), has QEMU log each block
it translates from the snapshot's load on (HMP ``log in_asm``), then, after the
handshake, ``--sets`` trivial sets and ``--settle`` idle seconds, splits the blocks
by where their code lives:

- ``kernel``: the guest kernel (with ``--vmlinux``, an unstripped build of the
  image's kernel, also its functions with most blocks);
- ``user_low``: user code below 4 GiB, the guest's non-PIE programs (its Python);
- ``user_high``: user code above, shared libraries (libc, Python's extensions).

``--no-warm-up`` skips the restored guest's warm-up set (farm always runs it;
bench/rss.py has the same switch). The log slows the guest: its blocks are right,
its times are not. Prints one JSON document::

    .venv/bin/python bench/tcg_origin.py [--sets 0] [--settle 3] [--no-warm-up]
        [--vmlinux images/cache/kernel-build/*/boot/vmlinux-*] [--top 25]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import farm  # the checkout on PYTHONPATH, before rss puts this script's own first

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (rss, first_set)

import rss
from first_set import one_set

IMAGES = Path(farm.__file__).resolve().parents[1] / "images"
KERNEL_BASE = 0xFFFF_8000_0000_0000  # x86-64: the upper half is the kernel's
LOW_USER = 1 << 32
_BLOCK = re.compile(r"^IN:[^\n]*\n(0x[0-9a-f]+):", re.M)


def block_starts(log: str) -> list[int]:
    """Guest addresses of the blocks an ``in_asm`` log shows, in translation order."""
    return [int(m.group(1), 16) for m in _BLOCK.finditer(log)]


def origins(starts: list[int]) -> dict[str, int]:
    """Blocks by where their code lives: ``kernel``, ``user_low``, ``user_high``."""
    count = collections.Counter(
        "kernel" if pc >= KERNEL_BASE else "user_low" if pc < LOW_USER else "user_high"
        for pc in starts
    )
    return {key: count[key] for key in ("kernel", "user_low", "user_high")}


def kernel_functions(starts: list[int], vmlinux: Path, top: int) -> dict[str, int]:
    """The ``top`` kernel functions with most blocks (symbols of ``vmlinux`` by ``nm``)."""
    out = subprocess.run(["nm", "-n", str(vmlinux)], capture_output=True, text=True, check=True)
    syms = [
        (int(addr, 16), name)
        for addr, kind, name in (line.split()[:3] for line in out.stdout.splitlines())
        if kind in "tTwW" and len(addr) == 16
    ]
    addrs = [addr for addr, _ in syms]
    count: collections.Counter[str] = collections.Counter()
    for pc in starts:
        if pc >= KERNEL_BASE:
            i = bisect.bisect_right(addrs, pc) - 1
            count[syms[i][1] if i >= 0 else "?"] += 1
    return dict(count.most_common(top))


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Restore one guest with QEMU logging its translations; the blocks by origin."""
    from farm.backend import snapshot
    from farm.backend.qemu import QemuBackend
    from farm.config import FarmConfig
    from farm.session.agent import FarmSession

    log = root / "in_asm.log"
    load = snapshot.resume

    def logged_resume(snap: Any, run_dir: Path, timeout: float, qmp: Any) -> None:
        for command in (f"logfile {log}", "log in_asm"):  # before the load: all it runs
            qmp.execute("human-monitor-command", **{"command-line": command})
        load(snap, run_dir, timeout, qmp)

    config = FarmConfig(
        backend="qemu",
        state_dir=root / "state",
        log_dir=root / "log",
        image_dir=Path(args.image_dir).resolve(),
        boot_timeout=args.timeout,
        warm_start=True,
        network="user",
        profile={"accel": "tcg", "memory": args.memory},
    )
    backend = QemuBackend(config)
    backend.shared_ram = True
    backend.spares.off = "bench/tcg_origin.py logs one restored guest"
    try:
        backend.spawn("qemu2", rss.TOKEN).destroy()  # the template, unlogged
        warm_up = not (args.no_warm_up and rss.skip_warm_up())
        snapshot.resume = logged_resume
        try:
            guest = backend.spawn("qemu1", rss.TOKEN)
        finally:
            snapshot.resume = load
        try:
            host, port = guest.address(args.timeout)
            session = FarmSession(host, port, token=rss.TOKEN, connect_attempts=100_000)
            session.connect(timeout=args.timeout, alive=guest.alive)
            try:
                for _ in range(args.sets):
                    one_set(session)
                time.sleep(args.settle)
            finally:
                session.close()
            jit = rss.translations(guest)
        finally:
            guest.destroy()
    finally:
        backend.close()
    starts = block_starts(log.read_text(errors="replace"))
    doc: dict[str, Any] = {
        "bench": "tcg_origin",
        "warm_up": warm_up,
        "sets": args.sets,
        "settle_s": args.settle,
        "info_jit": jit,
        "blocks": len(starts),
        "by_origin": origins(starts),
    }
    if args.vmlinux:
        doc["kernel_functions"] = kernel_functions(starts, Path(args.vmlinux), args.top)
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=0, help="trivial sets after the handshake")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds at the end")
    parser.add_argument("--no-warm-up", action="store_true", help="skip the guest's warm-up")
    parser.add_argument("--vmlinux", default="", help="unstripped kernel: function names")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--image-dir", default=str(IMAGES))
    parser.add_argument("--memory", type=int, default=256, help="guest MiB")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="farm-tcg-origin-") as tmp:
        print(json.dumps(measure(args, Path(tmp)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
