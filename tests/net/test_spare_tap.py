"""A bridged qemu spare's tap (farm/backend/spare_tap.py), in a private namespace.

The spare's tap is renamed to the machine's at hand-over while it is up and stays
on the bridge; the next spare's tap removes the spare taps of dead farms (nothing
holds them, no live process has their PID) and keeps this process's and a live one's;
a name already in use is not taken again. A machine's tap a live QEMU holds is not
removed to make room for the renamed one.
"""

from __future__ import annotations

import json

from .conftest import NetNs

SCRIPT = r"""
import ipaddress, json, os, subprocess
import psutil
from farm.backend import spare_tap
from farm.backend.snapshot_net import WarmNet
from farm.bridge.bridge import Bridge
from farm.bridge.dhcp import DhcpPlan

def links():
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {l.split(": ")[1].split("@")[0]: l for l in out.splitlines()}

bridge = Bridge("br0", ipaddress.IPv4Interface("10.200.40.1/21"))
bridge.create()
net = WarmNet(DhcpPlan.create(), bridge=bridge)
dead = next(n for n in range(1, 100000) if not spare_tap._owner_may_live(f"farm-taps{n}a"))
live = os.getppid() % 100000  # a live process that is not this one
stale, kept = f"farm-taps{dead}a", f"farm-taps{live}z"
taken = f"farm-taps{os.getpid() % 100000}a"  # the name spare_tap() gives first: in use
for tap in (stale, kept, taken):
    bridge.add_tap(tap)
nic = spare_tap.spare_nic(net)  # removes the stale tap, makes this process's
report = {"nic": nic.tap, "taken": taken, "stale": stale, "after_make": sorted(links())}
spare_tap.rename_tap(nic.tap, "farm-tap3")
after = links()
report["renamed"] = after.get("farm-tap3", "")
report["after_rename"] = sorted(after)
print(json.dumps(report))
"""


def test_the_spare_tap_is_renamed_up_on_the_bridge_and_dead_farms_taps_go(netns: NetNs) -> None:
    result = netns.python(SCRIPT, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    nic = report["nic"]
    assert nic.startswith("farm-taps") and len(nic) <= 15, report
    assert nic in report["after_make"], report
    taps = [n for n in report["after_make"] if n.startswith("farm-taps")]
    assert len(taps) == 3 and report["stale"] not in taps, report  # the dead farm's: gone
    assert nic != report["taken"] and report["taken"] in taps, report  # a name in use: skipped
    assert "master br0" in report["renamed"] and ",UP" in report["renamed"], report
    assert nic not in report["after_rename"], report


HELD = r"""
import fcntl, ipaddress, json, os, struct, subprocess
from farm.backend import spare_tap
from farm.backend.snapshot_net import WarmNet
from farm.bridge.bridge import Bridge
from farm.bridge.dhcp import DhcpPlan
from farm.errors import NetworkError

def rename(old, new):
    try:
        spare_tap.rename_tap(old, new)
    except NetworkError as exc:
        return str(exc)
    return ""

def names():
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return sorted(l.split(": ")[1].split("@")[0] for l in out.splitlines())

bridge = Bridge("br0", ipaddress.IPv4Interface("10.200.40.1/21"))
bridge.create()
bridge.add_tap("farm-tap4")
tun = os.open("/dev/net/tun", os.O_RDWR)  # as QEMU does: the machine's guest runs on it
fcntl.ioctl(tun, 0x400454CA, struct.pack("16sH22x", b"farm-tap4", 0x0002 | 0x1000))
nic = spare_tap.spare_nic(WarmNet(DhcpPlan.create(), bridge=bridge))
report = {"nic": nic.tap, "carrier": rename(nic.tap, "farm-tap4")}
subprocess.run(["ip", "link", "set", "farm-tap4", "down"], check=True)  # no carrier now
report["held"] = rename(nic.tap, "farm-tap4")
report["kept"] = names()
os.close(tun)  # its QEMU is gone: a stale tap
report["stale"] = rename(nic.tap, "farm-tap4")
report["after"] = names()
print(json.dumps(report))
"""


def test_a_machines_tap_that_a_live_qemu_holds_is_not_removed(netns: NetNs) -> None:
    result = netns.python(HELD, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "farm-tap4 is in use" in report["carrier"], report  # up, with a carrier
    assert "farm-tap4 is in use" in report["held"], report  # down: held open all the same
    assert {report["nic"], "farm-tap4"} <= set(report["kept"]), report
    assert report["stale"] == "", report  # nobody holds it any more: removed, renamed
    assert "farm-tap4" in report["after"] and report["nic"] not in report["after"], report
