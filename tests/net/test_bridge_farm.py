"""Bridged networking end to end, inside a private network namespace (issue 5).

In a fresh namespace: farm brings up ``br0`` and its own dhcpd, boots three
QEMU guests (TCG) on taps, each guest takes its reserved address from farm's
dhcpd, a Distributor runs jobs on them (SqliteMonitor), and every guest pings
the other guests' reserved addresses over the bridge. Afterwards the
namespace holds no process (the ``netns`` fixture checks and deletes it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from farm.bridge.dhcp import DhcpPlan
from farm.image import ImageInfo
from tests.helpers import query

from .conftest import NetNs

SCENARIO = r"""
import json, subprocess, sys, time
from pathlib import Path
from farm.config import FarmConfig
from farm import Distributor
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet
from farm.tasksets.example import Hey0TaskSet

base, images, ips = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
config = FarmConfig(
    backend="qemu", network="bridge", state_dir=base / "state", log_dir=base / "log",
    image_dir=images, idle_linger=30.0, boot_timeout=150.0, max_concurrent_boots=3,
    profile={"accel": "tcg", "memory": 256},
    warm_start=False,  # cold boots take their lease from dhcpd (test_bridge_warm: restores)
)
# every variant pings all three reserved addresses: whichever guest runs it
# reaches the two others over br0 (-w: keep trying while a guest still boots)
ping_all = "; ".join(f"ping -c 1 -w 120 {ip} >/dev/null || exit 1" for ip in ips) + "; echo ok"
pings = TaskSet([Task({"id": 1, "pkg": "shell", "config": {"command": ping_all},
                       "numberofjobs": 1, "x-run": range(3)})])
report = {}
dist = Distributor(config)
try:
    dist.add_job(pings, SqliteMonitor(base / "pings.db"))
    dist.add_job(Hey0TaskSet(), SqliteMonitor(base / "hey.db"))
    dist.set_max_machine_value(3)
    report["finished"] = dist.wait_finished(timeout=200)
    report["machines"] = dist.machines()
    report["bridge_addr"] = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "br0"],
                                           capture_output=True, text=True).stdout
    report["taps_while_running"] = subprocess.run(
        ["ip", "-o", "link", "show", "master", "br0"], capture_output=True, text=True).stdout
finally:
    dist.close()
report["links_after"] = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                       text=True).stdout
print(json.dumps(report, default=str))
"""


@pytest.mark.timeout(330)
def test_three_guests_on_the_bridge_reach_each_other(netns: NetNs, image: ImageInfo) -> None:
    """br0 + farm's dhcpd in a namespace; 3 TCG guests get reserved IPs and ping each other."""
    plan = DhcpPlan.create()
    ips = [str(plan.ip_for(i)) for i in (1, 2, 3)]
    result = netns.python(
        SCENARIO, str(netns.dir), str(image.kernel.parent), ",".join(ips), timeout=300
    )
    logs = netns.dir / "log"
    consoles = {p.name: p.read_text(errors="replace") for p in sorted(logs.glob("*.console.log"))}
    context = (
        f"stderr:\n{result.stderr[-3000:]}\nconsoles:\n"
        + "\n".join(f"--- {k}\n{v[-1500:]}" for k, v in consoles.items())
        + f"\ndhcpd.log:\n{_tail(netns.dir / 'state' / 'dhcp' / 'dhcpd.log')}"
    )
    assert result.returncode == 0, context
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["finished"] is True, context
    assert f"inet {plan.bridge_interface}" in report["bridge_addr"]

    # each guest that booted got its reserved address from farm's dhcpd (udhcpc)
    booted = {name: text for name, text in consoles.items() if "farm-init: dhcp:" in text}
    assert len(booted) == 3, context
    for i, ip in enumerate(ips, start=1):
        text = consoles[f"qemu{i}.console.log"]
        assert f"farm-init: dhcp: {ip}/{plan.subnet.prefixlen}" in text, context

    # the ping job: 3 variants finished, each one EXIT (status 0) after reaching all 3 guests
    db = netns.dir / "pings.db"
    assert query(db, "SELECT state, count(*) FROM tasksets GROUP BY state") == [("finished", 3)]
    exits = query(db, "SELECT type FROM events WHERE task_id = 1 AND type LIKE 'EXIT%'")
    assert exits == [("EXIT",)] * 3, context
    hey = query(netns.dir / "hey.db", "SELECT state FROM tasksets")
    assert hey == [("finished",)]

    # taps existed while guests ran; after close(): no tap, no bridge, no dhcpd pidfile
    assert "farm-tap" in report["taps_while_running"]
    assert "farm-tap" not in report["links_after"]
    assert "br0" not in report["links_after"]
    assert not (netns.dir / "state" / "dhcp" / "dhcpd.pid").exists()


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(none)"


KILLED = r"""
import os, signal, sys, time
from pathlib import Path
from farm.config import FarmConfig
from farm import Distributor
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet

base, images = Path(sys.argv[1]), Path(sys.argv[2])
config = FarmConfig(
    backend="qemu", network="bridge", state_dir=base / "state", log_dir=base / "log",
    image_dir=images, boot_timeout=150.0, profile={"accel": "tcg", "memory": 256},
)
dist = Distributor(config)
dist.add_job(TaskSet([Task({"pkg": "idle", "config": {"ms": 60000}, "numberofjobs": 1})]),
             SqliteMonitor(base / "idle.db"))
deadline = time.monotonic() + 150
while not any(m["state"] == "running" for m in dist.machines()):
    assert time.monotonic() < deadline, dist.machines()
    time.sleep(0.1)
print("running", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

AFTER = r"""
import json, subprocess, sys
from pathlib import Path
from farm.config import FarmConfig
from farm import Distributor
from farm.monitors import SqliteMonitor
from farm.tasksets.example import Hey0TaskSet

base, images = Path(sys.argv[1]), Path(sys.argv[2])
config = FarmConfig(
    backend="qemu", network="bridge", state_dir=base / "state", log_dir=base / "log",
    image_dir=images, boot_timeout=150.0, journal=False, profile={"accel": "tcg", "memory": 256},
)
links_before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
dist = Distributor(config)
try:
    dist.add_job(Hey0TaskSet(), SqliteMonitor(base / "hey.db"))
    finished = dist.wait_finished(timeout=200)
finally:
    dist.close()
links_after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
print(json.dumps({"finished": finished, "before": links_before, "after": links_after}))
"""


@pytest.mark.timeout(330)
def test_sigkilled_bridged_farm_is_reaped_and_the_next_one_reuses_the_network(
    netns: NetNs, image: ImageInfo
) -> None:
    """SIGKILL the farm: its watchdog ends QEMU/screen/dhcpd; a new farm reuses br0 + tap."""
    from .conftest import ns_processes

    first = netns.python(KILLED, str(netns.dir), str(image.kernel.parent), timeout=200)
    assert first.returncode == -9 and "running" in first.stdout, first.stderr[-3000:]
    deadline = time.monotonic() + 30
    left = ns_processes(netns.name)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = ns_processes(netns.name)
    assert left == [], [p.cmdline() for p in left]

    second = netns.python(AFTER, str(netns.dir), str(image.kernel.parent), timeout=250)
    assert second.returncode == 0, second.stderr[-3000:]
    report = json.loads(second.stdout.strip().splitlines()[-1])
    assert "br0" in report["before"] and "farm-tap1" in report["before"]  # left by the dead farm
    assert report["finished"] is True
    assert "br0" not in report["after"] and "farm-tap" not in report["after"]
