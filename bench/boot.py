"""Boot latency of the guest image: QEMU start -> agent handshake, over several boots.

Prints one JSON document: median/p90/min/max/stdev of the handshake latency
and the median CPU seconds QEMU used until then (less sensitive to a busy host), the
moment each ``farm-init:`` step appeared on the console (medians), image
sizes, and QEMU's RSS next to the guest RAM size.

    .venv/bin/python bench/boot.py [--boots 5] [--profile '{"machine": "q35"}']
                                   [--kernel-args-extra "..."] [--build]
                                   [--network user|bridge] [--warm]
    .venv/bin/python bench/boot.py --compare '{"A": {}, "B": {"profile": {...},
                                   "kernel_args_extra": "..."}}' [--boots 10]

``--compare``: interleaved A/B(/C...) runs in one session (boot 1 of every
variant, then boot 2 of every variant, ...; each round starts one variant later,
so no variant is always the first after a pause), so the host's load drifts hit
all variants alike; a failed boot is counted, not fatal. Prints per variant the
median, p90, successes and failures, plus the load average before and after.

``--network user`` (default): QEMU user-mode networking, the agent reached
through a hostfwd port on 127.0.0.1. ``--network bridge`` (root): the bench
creates a private network namespace ``farmbench-XXXX``, re-executes itself
inside it (``ip netns exec``), brings up farm's bridge and dhcpd there
(:class:`farm.bridge.bridge.BridgeNetwork`), boots each guest on its own tap
with its reserved MAC (one guest at a time) and handshakes with the agent at
the guest's reserved IP; afterwards every process in the namespace is ended
and the namespace deleted. The JSON then also holds ``"network": "bridge"``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import boot_once, netns_inode, netns_processes, percentile  # noqa: E402

from farm.bridge.bridge import BridgeNetwork  # noqa: E402
from farm.bridge.dhcp import DEFAULT_SUBNET, DhcpPlan  # noqa: E402
from farm.image import build  # noqa: E402
from farm.profile import MachineProfile, default_profile  # noqa: E402

#: set (to the namespace's name) in the copy of the bench running inside its namespace
NETNS_ENV = "FARM_BENCH_NETNS"


def _end_processes_in(name: str) -> list[str]:
    """SIGTERM (then SIGKILL) every process whose network namespace is ``name``."""
    found = netns_processes(name)
    names = []
    for proc in found:
        with contextlib.suppress(psutil.Error):
            names.append(" ".join(proc.cmdline())[:120])
            proc.terminate()
    _, alive = psutil.wait_procs(found, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return names


def run_in_namespace(argv: list[str]) -> int:
    """Create ``farmbench-XXXX``, run this bench inside it with ``argv``, delete it again."""
    if os.geteuid() != 0:
        raise SystemExit("--network bridge needs root (ip netns, bridge, taps, dhcpd)")
    for tool in ("ip", "dhcpd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"--network bridge needs {tool} (iproute2, isc-dhcp-server)")
    name = f"farmbench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
            timeout=10,
        )
        child = [sys.executable, str(Path(__file__).resolve()), *argv]
        proc = subprocess.run(
            ["ip", "netns", "exec", name, *child],
            env={**os.environ, NETNS_ENV: name},
            check=False,
        )
        return proc.returncode
    finally:
        left = _end_processes_in(name)
        if left:
            print(f"ended processes left in {name}: {left}", file=sys.stderr)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)
        if netns_inode(name) is not None:
            print(f"warning: namespace {name} could not be deleted", file=sys.stderr)


def _inside_own_namespace() -> bool:
    """True if this process runs in the namespace named by $FARM_BENCH_NETNS."""
    name = os.environ.get(NETNS_ENV, "")
    inode = netns_inode(name) if name else None
    return inode is not None and os.stat("/proc/self/ns/net").st_ino == inode


def bridged_boots(profile: MachineProfile, workdir: Path, boots: int) -> list[dict[str, Any]]:
    """Bring up br0 + dhcpd here, boot guest 1..N one at a time on its tap; take it all down."""
    plan = DhcpPlan.create(DEFAULT_SUBNET, machines=max(16, boots))
    runs = []
    with BridgeNetwork(plan, workdir / "state") as net:
        for n in range(boots):
            nic = net.attach(f"bench{n + 1}")  # tap farm-tapN, MAC/IP reserved for id N
            try:
                runs.append({**boot_once(profile, workdir, n, nic), "ip": str(nic.ip)})
            finally:
                nic.release()
    return runs


def _variant_profile(base: dict[str, Any], spec: dict[str, Any]) -> MachineProfile:
    """The default profile with a --compare variant's overrides and extra kernel args."""
    unknown = set(spec) - {"profile", "kernel_args_extra"}
    if unknown:
        raise SystemExit(f"--compare: unknown variant key(s) {sorted(unknown)}")
    profile = MachineProfile.from_dict({**base, "accel": "tcg", **spec.get("profile", {})})
    if spec.get("kernel_args_extra"):
        profile = replace(profile, kernel_args=f"{profile.kernel_args} {spec['kernel_args_extra']}")
    return profile


def compare(base: dict[str, Any], variants: dict[str, Any], boots: int) -> dict[str, Any]:
    """Interleaved boots of several variants; per variant median/p90/successes/failures."""
    profiles = {name: _variant_profile(base, spec or {}) for name, spec in variants.items()}
    results: dict[str, list[float]] = {name: [] for name in profiles}
    cpu: dict[str, list[float]] = {name: [] for name in profiles}
    failures: dict[str, list[str]] = {name: [] for name in profiles}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="farm-bench-boot-") as tmp:
        names = list(profiles)
        for n in range(boots):  # each round starts at the next variant: no variant always first
            for name in names[n % len(names) :] + names[: n % len(names)]:
                profile = profiles[name]
                try:
                    run = boot_once(profile, Path(tmp), n)
                    results[name].append(run["latency"])
                    cpu[name].append(run["cpu_s"])
                except Exception as exc:  # a failed boot is a figure here, not the end
                    failures[name].append(f"boot {n}: {str(exc)[:300]}")
    doc: dict[str, Any] = {
        "benchmark": "qemu start -> agent handshake, interleaved variants",
        "boots_per_variant": boots,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "variants": {},
    }
    for name, profile in profiles.items():
        lat = results[name]
        doc["variants"][name] = {
            "ok": len(lat),
            "failed": len(failures[name]),
            "median_s": round(statistics.median(lat), 3) if lat else None,
            "p90_s": round(percentile(lat, 90), 3) if lat else None,
            "all": [round(x, 3) for x in lat],
            "qemu_cpu_s_median": round(statistics.median(cpu[name]), 3) if lat else None,
            "failures": failures[name],
            "kernel_args": profile.kernel_args,
            "extra_args": list(profile.extra_args),
            "machine": profile.machine,
            "bios": profile.bios,
        }
    first = next(iter(profiles))
    for name in list(profiles)[1:]:  # same-round pairs: the host's drift cancels out
        if failures[first] or failures[name]:
            continue  # a failed boot breaks the pairing of rounds
        pairs = list(zip(results[first], results[name], strict=True))
        if pairs:
            doc["variants"][name][f"paired_vs_{first}"] = {
                "median_saving_s": round(statistics.median(a - b for a, b in pairs), 3),
                "median_ratio": round(statistics.median(b / a for a, b in pairs), 3),
            }
    return doc


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON document."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--boots", type=int, default=7)
    ap.add_argument("--profile", default="{}", help="JSON overrides of the default profile")
    ap.add_argument("--kernel-args-extra", default="")
    ap.add_argument("--image-dir", type=Path, default=REPO / "images")
    ap.add_argument("--build", action="store_true", help="build (or reuse) the image first")
    ap.add_argument(
        "--network",
        choices=("user", "bridge"),
        default="user",
        help="user: hostfwd on 127.0.0.1; bridge: farm's br0 + dhcpd in a private namespace",
    )
    ap.add_argument(
        "--compare",
        default="",
        help='JSON {"name": {"profile": {...}, "kernel_args_extra": "..."}, ...}: '
        "interleaved boots of each variant (user-mode network)",
    )
    ap.add_argument(
        "--warm",
        action="store_true",
        help="restore each guest from a saved snapshot instead of booting it "
        '(bench/boot_warm.py; JSON adds "warm"; user-mode network only)',
    )
    raw = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(raw)
    if args.warm and (args.network == "bridge" or args.compare):
        raise SystemExit("--warm works with --network user only, and not with --compare")
    logging.basicConfig(level=logging.WARNING)
    if args.network == "bridge" and not _inside_own_namespace():
        if args.build:
            build(out_dir=args.image_dir)  # once, outside; the copy inside reuses it
        return run_in_namespace([a for a in raw if a != "--build"])
    if args.build:
        build(out_dir=args.image_dir)
    base = default_profile(args.image_dir).to_dict()
    if args.compare:
        print(json.dumps(compare(base, json.loads(args.compare), args.boots), indent=1))
        return 0
    overrides = json.loads(args.profile)
    profile = MachineProfile.from_dict({**base, "accel": "tcg", **overrides})
    if args.kernel_args_extra:
        profile = MachineProfile.from_dict(
            {**profile.to_dict(), "kernel_args": f"{profile.kernel_args} {args.kernel_args_extra}"}
        )
    runs = []
    with tempfile.TemporaryDirectory(prefix="farm-bench-boot-") as tmp:
        if args.network == "bridge":
            runs = bridged_boots(profile, Path(tmp), args.boots)
        else:
            boot: Any = boot_once
            if args.warm:  # the snapshot is built here, once, before the timed restores
                from boot_warm import WarmBoot

                boot = WarmBoot(profile, Path(tmp))
            for n in range(args.boots):
                runs.append(boot(profile, Path(tmp), n))
            warm_info = boot.info() if args.warm else None
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
            "p90": round(percentile(lat, 90), 3),
            "stdev": round(statistics.stdev(lat), 3) if len(lat) > 1 else 0.0,
            "all": [round(x, 3) for x in lat],
        },
        "qemu_cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 3),
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
            k: v
            for k, v in profile.to_dict().items()
            if k in ("machine", "cpu", "memory", "accel", "bios")
        },
        "kernel_args": profile.kernel_args,
    }
    if args.warm:
        doc["warm"] = warm_info
    if args.network == "bridge":
        doc["network"] = "bridge"
        doc["bridge"] = {
            "subnet": DEFAULT_SUBNET,
            "guest_ips": [r["ip"] for r in runs],
            "agent": "guest's reserved IP, port " + str(profile.guest_port),
        }
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
