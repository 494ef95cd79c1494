"""Spawn -> authenticated session: libvirt warm vs qemu warm vs cold, through the backends.

    .venv/bin/python bench/warm.py [--boots 10] [--variants qemu-warm,libvirt-warm,...]

Each variant (``BACKEND-warm`` or ``BACKEND-cold``, backend ``qemu`` or
``libvirt`` with its default embedded driver, user-mode network, the default
profile) runs in its own child process on a fresh state dir (libvirt allows
one embedded root per process): a first spawn (which for warm variants
builds the template snapshot; reported apart as ``first_s``), then
``--boots`` sequential spawns, each timed like ``bench/ready.py`` does (spawn,
address, FarmSession connect + authentication) and destroyed before the
next. Before each timed spawn the backend is let settle, untimed (the
qemu and libvirt backends make their next spare in the background after a
warm spawn, see ``farm.backend.qemu_spare`` and ``libvirt_spare``): a farm
respawns a guest when one dies, long after the previous spawn; ``--back-to-back`` spawns right after
the previous destroy instead (the spare may still be in the making, the spawn
waits for it). Prints one JSON document: per variant median/p90/min/max (p90 by
``common.percentile``), and ``libvirt_vs_qemu_warm``: the ratio of the two
warm medians (target: <= 1.10, both medians <= 0.25 s).

``qemu-warm-bridge`` (root; not in the default list): the qemu backend's warm
start on farm's bridge + dhcpd (``network = "bridge"``), each restored guest
at its own reserved MAC and IP (target: median <= 0.4 s). Its child runs in a
fresh network namespace ``farmbench-XXXX`` (``ip netns exec``, as
``bench/boot.py --network bridge`` does): no traffic leaves it, and every
process left in it is killed and the namespace deleted afterwards.
``libvirt-warm-bridge`` likewise: the libvirt backend's (``libvirt_snapshot``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import farm_config, netns_inode, netns_processes, percentile  # noqa: E402
from ready import boot_once  # noqa: E402

VARIANTS = ("qemu-warm", "libvirt-warm", "qemu-cold", "libvirt-cold")
BRIDGED = ("qemu-warm-bridge", "qemu-cold-bridge")  # root: run in a namespace of their own
BRIDGED += ("libvirt-warm-bridge", "libvirt-cold-bridge")


def spares_of(backend: Any) -> Any:
    """The backend's spare maker (qemu: ``spares``, libvirt: ``warm.spares``), or None."""
    found = getattr(backend, "spares", None)
    return found if found is not None else getattr(getattr(backend, "warm", None), "spares", None)


def settle(backend: Any, back_to_back: bool) -> bool | None:
    """Wait (untimed) for the backend's spare domain; None: it has none."""
    spares = spares_of(backend)
    if spares is None or back_to_back:
        return None
    return bool(spares.wait_ready(60.0))


def one(variant: str, boots: int, back_to_back: bool = False) -> dict[str, Any]:
    """``boots`` timed spawns of one variant (after one untimed first spawn)."""
    from farm.backend import create
    from farm.session.token import resolve_token

    backend_name, mode, *net = variant.split("-")
    with tempfile.TemporaryDirectory(prefix="farm-bench-warm-") as tmp:
        cfg = farm_config(tmp, backend_name, 1).replace(
            image_dir=ROOT / "images",
            warm_start=mode == "warm",
            network="bridge" if net == ["bridge"] else "user",
        )
        backend = create(cfg)
        try:
            backend.check()
            token = resolve_token(cfg.token, cfg.state_dir)
            first = boot_once(backend, token)
            lat = []
            for _ in range(boots):
                settle(backend, back_to_back)
                lat.append(boot_once(backend, token)["ready_s"])
            spares = spares_of(backend)
        finally:
            backend.close()
    return {
        **({"from_spare": spares.used, "waited": spares.waited} if spares is not None else {}),
        "first_s": round(first["ready_s"], 3),
        "median": round(statistics.median(lat), 3),
        "p90": round(percentile(lat, 90), 3),
        "min": round(min(lat), 3),
        "max": round(max(lat), 3),
        "all": [round(x, 3) for x in lat],
    }


def child(variant: str, boots: int, back_to_back: bool) -> subprocess.CompletedProcess[str]:
    """Run ``variant`` in a child process (bridged: in a fresh network namespace)."""
    argv = [sys.executable, __file__, "--one", variant, "--boots", str(boots)]
    argv += ["--back-to-back"] if back_to_back else []
    if variant not in BRIDGED:
        return subprocess.run(argv, capture_output=True, text=True, check=False)
    if os.geteuid() != 0:
        return subprocess.CompletedProcess(argv, 1, "", "bridged variants need root (netns)")
    name = f"farmbench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        inside = ["ip", "netns", "exec", name, *argv]
        return subprocess.run(inside, capture_output=True, text=True, check=False)
    finally:
        left = netns_processes(name)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=5)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)
        if netns_inode(name) is not None:
            print(f"warning: namespace {name} could not be deleted", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--back-to-back",
        action="store_true",
        help="spawn right after the previous destroy (do not let the backend settle)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child: run this variant only
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.boots, args.back_to_back)))
        return
    doc: dict[str, Any] = {"bench": "warm", "boots": args.boots, "spawn_to_session_s": {}}
    if args.back_to_back:
        doc["back_to_back"] = True
    for variant in args.variants.split(","):
        if variant not in VARIANTS + BRIDGED:
            parser.error(f"unknown variant {variant!r}; known: {', '.join(VARIANTS + BRIDGED)}")
        proc = child(variant, args.boots, args.back_to_back)
        if proc.returncode != 0:
            doc["spawn_to_session_s"][variant] = {"error": proc.stderr[-800:]}
            continue
        doc["spawn_to_session_s"][variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    res = doc["spawn_to_session_s"]
    if "median" in res.get("qemu-warm", {}) and "median" in res.get("libvirt-warm", {}):
        ratio = res["libvirt-warm"]["median"] / res["qemu-warm"]["median"]
        doc["libvirt_vs_qemu_warm"] = round(ratio, 3)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
