"""Where a cold boot's time goes: console timestamps, initcalls ranked by duration.

Boots the guest image once (or reads a console log already captured) with
``printk.time=1 initcall_debug ignore_loglevel`` and prints one JSON document:

- ``initcalls_top``: the slowest initcalls (``initcall X returned R after N usecs``);
- ``gaps_top``: the largest gaps between consecutive timestamped console lines,
  with the line before the gap (catches work outside initcalls: early setup,
  initramfs unpacking, waiting for a device);
- ``milestones_s``: the kernel timestamp of well-known lines (serial console up,
  initramfs unpacked, ``Run /init``) and, when booted here, host-side seconds
  since QEMU started for the first console byte and each ``farm-init:`` step;
- ``initcall_total_s``: the sum of all initcall durations.

Verbose console output itself costs time under TCG, so the absolute figures
of such a boot are higher than a quiet boot's; the ranking is what counts.

``--icount``: run the guest with ``-icount shift=0,sleep=off``: its clock then
counts executed instructions (1 ns each) and jumps over idle waits, so the
kernel timestamps no longer depend on how busy the host is (other QEMUs on
the same cores). Use it to compare kernel arguments on a loaded machine; the
host-side seconds of such a boot mean nothing.

    .venv/bin/python bench/boot_breakdown.py [--top 25] [--profile '{...}']
                                             [--kernel-args-extra "..."]
                                             [--log console.log] [--keep-log out.log]
                                             [--icount]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: what the breakdown boot adds to the profile's kernel arguments
DEBUG_ARGS = "printk.time=1 initcall_debug ignore_loglevel"
#: what it removes (they would hide the lines it parses)
HIDING_ARGS = ("quiet", "loglevel=")

_STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")
_RETURNED = re.compile(
    r"initcall (\S+?)(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?: \[\S+\])? returned (-?\d+) after (\d+) usecs"
)
_MILESTONES = {
    "console_enabled": "printk: console [ttyS0] enabled",
    "initramfs_unpack_start": "Unpacking initramfs",
    "initramfs_freed": "Freeing initrd memory",
    "kernel_image_freed": "Freeing unused kernel image",
    "run_init": "Run /init as init process",
}


def parse(lines: Iterable[str], top: int = 25) -> dict[str, Any]:
    """The breakdown of one verbose console log (kernel timestamps, seconds)."""
    stamped: list[tuple[float, str]] = []
    calls: list[tuple[float, str, int]] = []
    milestones: dict[str, float] = {}
    for raw in lines:
        m = _STAMP.match(raw.rstrip("\r\n"))
        if not m:
            continue
        t, text = float(m.group(1)), m.group(2)
        stamped.append((t, text))
        r = _RETURNED.search(text)
        if r:
            calls.append((int(r.group(3)) / 1e6, r.group(1), int(r.group(2))))
        for key, needle in _MILESTONES.items():
            if needle in text:
                milestones.setdefault(key, t)
    calls.sort(key=lambda c: -c[0])
    gaps = sorted(
        ((b[0] - a[0], a[0], a[1]) for a, b in itertools.pairwise(stamped)),
        key=lambda g: -g[0],
    )
    return {
        "last_kernel_stamp_s": stamped[-1][0] if stamped else None,
        "initcalls": len(calls),
        "initcall_total_s": round(sum(c[0] for c in calls), 4),
        "initcalls_top": [
            {"s": round(s, 4), "initcall": name, **({"returned": rc} if rc else {})}
            for s, name, rc in calls[:top]
        ],
        "gaps_top": [
            {"s": round(g, 4), "at": round(at, 4), "after": text[:100]}
            for g, at, text in gaps[: max(5, top // 2)]
        ],
        "milestones_s": {k: round(v, 4) for k, v in milestones.items()},
    }


def debug_kernel_args(args: str) -> str:
    """The profile's kernel arguments without quiet/loglevel, plus the timing arguments."""
    kept = [a for a in args.split() if not any(a.startswith(h) for h in HIDING_ARGS)]
    return " ".join([*kept, DEBUG_ARGS])


#: deterministic guest clock: 1 ns per instruction, idle time skipped
ICOUNT_ARGS = ("-icount", "shift=0,sleep=off")


def boot_and_parse(
    profile_overrides: dict[str, Any],
    extra: str,
    top: int,
    keep: Path | None,
    icount: bool = False,
) -> dict[str, Any]:
    """Boot once with the timing arguments; the breakdown plus host-side step times."""
    from common import boot_once

    from farm.profile import MachineProfile, default_profile

    base = {**default_profile(REPO / "images").to_dict(), "accel": "tcg", **profile_overrides}
    args = debug_kernel_args(f"{base['kernel_args']} {extra}".strip())
    if icount:
        base["extra_args"] = [*base.get("extra_args", []), *ICOUNT_ARGS]
    profile = MachineProfile.from_dict({**base, "kernel_args": args})
    with tempfile.TemporaryDirectory(prefix="farm-boot-breakdown-") as tmp:
        run = boot_once(profile, Path(tmp), 0)
        log = Path(tmp) / "b0.console.log"
        text = log.read_text(errors="replace")
        if keep is not None:
            shutil.copyfile(log, keep)
    doc = parse(text.splitlines(), top)
    doc["host_s"] = {
        "handshake": round(run["latency"], 3),
        **{k: round(v, 3) for k, v in sorted(run["marks"].items(), key=lambda kv: kv[1])},
    }
    doc["kernel_args"] = args
    doc["icount"] = icount
    return doc


def main(argv: list[str] | None = None) -> int:
    """Boot (or read ``--log``) and print the breakdown as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--log", type=Path, help="parse this console log instead of booting")
    ap.add_argument("--keep-log", type=Path, help="copy the boot's console log here")
    ap.add_argument("--profile", default="{}", help="JSON overrides of the default profile")
    ap.add_argument("--kernel-args-extra", default="")
    ap.add_argument("--icount", action="store_true", help="instruction-counted guest clock")
    args = ap.parse_args(argv)
    if args.log is not None:
        doc = parse(args.log.read_text(errors="replace").splitlines(), args.top)
    else:
        doc = boot_and_parse(
            json.loads(args.profile), args.kernel_args_extra, args.top, args.keep_log, args.icount
        )
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
