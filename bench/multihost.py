"""Benchmark: task sets per second on 1 hypervisor host vs 2 hosts (same 4 guests in total).

Needs root. Builds the net test's lab (``tests/net/test_multihost.py``): a
namespace nsB with its own bridge, farm's dhcpd and a second real libvirtd
(remote protocol over its socket, images uploaded as volumes), and the
distributor's namespace nsD on a veth port of that bridge. Then, inside nsD,
runs the same job twice with a limit of 4 guests: on host ``a`` alone (the
embedded driver, max 4) and on ``a`` + ``b`` (max 2 each). Both hosts are
this machine, so they share its cores: the figure shows what spreading costs
or gains here, not what N real boxes give (see docs/multihost.md). Prints JSON.

    sudo .venv/bin/python bench/multihost.py [--sets 16] [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from farm.image import build  # noqa: E402
from tests.net.conftest import PYTHON, NetLab, _ip  # noqa: E402
from tests.net.test_multihost import B_BRIDGE, D_ADDR, Libvirtd, _farm_net  # noqa: E402

RUN = r"""
import json, sys, time
from pathlib import Path
from farm.config import FarmConfig
from farm import Distributor
from farm.taskset import Task, TaskSet

base, images, sock, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
sets, secs = int(sys.argv[5]), float(sys.argv[6])
a = {"name": "a", "uri": f"qemu:///embed?root={base / 's' / 'lv'}", "max_machines": 4}
b = {"name": "b", "uri": f"qemu+unix:///system?socket={sock}", "max_machines": 2,
     "network": "bridge", "bridge_name": "farmbr", "bridge_subnet": "10.200.48.0/21",
     "image_dir": "/var/lib/libvirt/farm-images"}
hosts = [a] if mode == "1" else [{**a, "max_machines": 2}, b]
config = FarmConfig(backend="libvirt", state_dir=base / "s", log_dir=base / "log",
                    image_dir=images, idle_linger=1.0, boot_timeout=150.0, journal=False,
                    max_concurrent_boots=2, profile={"accel": "tcg", "memory": 256},
                    hypervisors=hosts)
ts = TaskSet([Task({"id": 1, "pkg": "shell", "config": {"command": f"sleep {secs}"},
                    "numberofjobs": 1, "x-run": range(sets)})])
dist = Distributor(config)
try:
    t0 = time.monotonic()
    dist.add_job(ts)
    dist.set_max_machine_value(4)
    ready = None
    while not dist.wait_finished(timeout=0.2):
        if ready is None and sum(m["state"] in ("running", "idle") for m in dist.machines()) == 4:
            ready = time.monotonic() - t0
    total = time.monotonic() - t0
    placed = {h["name"]: h["spawned"] for h in dist.backend_status()}
finally:
    dist.close()
print(json.dumps({"hosts": len(hosts), "sets": sets, "set_seconds": secs,
                  "all_ready_s": round(ready or total, 2), "total_s": round(total, 2),
                  "sets_per_s": round(sets / total, 3),
                  "sets_per_s_after_ready": round(sets / max(total - (ready or 0), 1e-9), 3),
                  "guests_per_host": placed}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/multihost.py needs root (network namespaces, libvirtd)")
    image = build(out_dir=ROOT / "images")
    lab = NetLab()
    ns_d, ns_b = lab.add(), lab.add()
    daemon = Libvirtd(ns_b)
    results = []
    try:
        up = _farm_net(ns_b, "up")
        if up.returncode != 0:
            raise SystemExit(up.stderr)
        _ip("-n", ns_b.name, "link", "add", "vb", "type", "veth", "peer", "name", "vd",
            "netns", ns_d.name)  # fmt: skip
        _ip("-n", ns_b.name, "link", "set", "vb", "master", B_BRIDGE, "up")
        _ip("-n", ns_d.name, "addr", "add", D_ADDR, "dev", "vd")
        _ip("-n", ns_d.name, "link", "set", "vd", "up")
        daemon.start()
        script = ns_d.dir / "run.py"
        script.write_text(RUN)
        for mode in ("1", "2"):
            proc = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns_d.name,
                    PYTHON,
                    str(script),
                    str(ns_d.dir),
                    str(image.kernel.parent),
                    str(daemon.socket),
                    mode,
                    str(args.sets),
                    str(args.seconds),
                ],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if proc.returncode != 0:
                raise SystemExit(f"run with {mode} host(s) failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        daemon.stop()
        _farm_net(ns_b, "down")
        leftovers = lab.close()
        if leftovers:
            print(f"left running: {leftovers}", file=sys.stderr)
    print(json.dumps({"bench": "multihost", "cores": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
