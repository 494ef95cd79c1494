"""libvirt warm start on farm's bridge, inside a private network namespace (issue 18).

A libvirt backend (embedded driver) with ``network = "bridge"`` builds one
template domain on br0 (the template's MAC and static address) and restores
guests from it: each restored guest, a plain restore and one taken from the
spare domain, must answer at its OWN reserved address with its OWN MAC (the
host's neighbour table says which MAC answered) and its own key only, and its
console must show a restore (no boot steps). A damaged bridged snapshot means a
cold boot at the reserved address (farm's dhcpd), a rebuilt template and every
set of a Distributor finished, guests reaching each other over the bridge.
Afterwards no domain, tap, bridge or process is left (the ``netns`` fixture).
"""

from __future__ import annotations

import pytest

from farm.bridge.dhcp import DhcpPlan, mac_for
from farm.image import ImageInfo
from tests.helpers import query

from .conftest import NetNs, ns_processes, warm_scenario_prelude

COMMON = (
    warm_scenario_prelude("libvirt", "s", 2)
    + r"""
from farm.backend.libvirt import LibvirtBackend
"""
)

WARM = (
    COMMON
    + r"""
backend = LibvirtBackend(config("log"))
guests = []
try:
    assert backend.warm is not None, "bridged libvirt must warm start"
    backend.warm.ensure()  # builds the template
    for name in ("qemu1", "qemu2"):
        if name == "qemu2":  # the first spawn started making the spare
            report["spare_ready"] = backend.warm.spares.wait_ready(150.0)
        started = time.monotonic()
        guest = backend.spawn(name, "tok-" + name)
        guests.append(guest)
        host, port = guest.address(5.0)
        hello(host, port, "tok-" + name)
        took = time.monotonic() - started
        try:
            hello(host, port, "tok-other")
            refused = False
        except PermissionError:
            refused = True
        report["guests"][name] = {
            "host": host, "seconds": took, "other_refused": refused, "neigh": neigh(host),
        }
    report["spares_used"] = backend.warm.spares.used
    report["domains"] = [d.name() for d in backend.connection().listAllDomains(0)]
finally:
    for guest in guests:
        guest.destroy()
    backend.close()
report["snapshots"] = sorted(p.name for p in (base / "s" / "snapshots").iterdir())
report["links_after"] = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                       text=True).stdout
print(json.dumps(report, default=str))
"""
)

CORRUPT = (
    COMMON
    + r"""
from farm import Distributor
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet
from farm.tasksets.example import Hey0TaskSet

backend = LibvirtBackend(config("log-backend"))
try:
    snap = backend.warm.ensure()
    with snap.path.open("r+b") as f:  # bytes flipped mid-file: the SHA256 check sees it
        f.seek(snap.size // 2)
        f.write(b"\xff" * 4096)
    guest = backend.spawn("qemu1", "tok-qemu1")
    try:
        host, port = guest.address(5.0)
        hello(host, port, "tok-qemu1")
        report["guests"]["qemu1"] = {"host": host, "neigh": neigh(host)}
        report["corrupt_removed"] = not snap.path.exists()
    finally:
        guest.destroy()
finally:
    backend.close()
ping_all = "; ".join(f"ping -c 1 -w 60 {ip} >/dev/null || exit 1" for ip in ips) + "; echo ok"
pings = TaskSet([Task({"id": 1, "pkg": "shell", "config": {"command": ping_all},
                       "numberofjobs": 1, "x-run": range(3)})])
dist = Distributor(config("log"))
try:
    dist.add_job(pings, SqliteMonitor(base / "pings.db"))
    dist.add_job(Hey0TaskSet(), SqliteMonitor(base / "hey.db"))
    dist.set_max_machine_value(2)
    report["finished"] = dist.wait_finished(timeout=250)
finally:
    dist.close()
report["snapshots"] = sorted(p.name for p in (base / "s" / "snapshots").iterdir())
report["links_after"] = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                       text=True).stdout
print(json.dumps(report, default=str))
"""
)


KILLED = (
    COMMON
    + r"""
import os, signal
backend = LibvirtBackend(config("log"))
guest = backend.spawn("qemu1", "tok-qemu1")
hello(*guest.address(5.0), "tok-qemu1")
assert backend.warm.spares.wait_ready(150.0)
entries = backend.registry.entries()
report["pids"] = {n: e["pid"] for n, e in entries.items() if e.get("kind") == "libvirt-qemu"}
print(json.dumps(report, default=str), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the guest and the spare on the bridge still run
"""
)

REAP = (
    COMMON
    + r"""
backend = LibvirtBackend(config("log-reap"), warm_start=False)
try:
    report["reaped"] = backend.reap_stale()
finally:
    backend.close()
report["links_after"] = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                       text=True).stdout
print(json.dumps(report, default=str))
"""
)


def _qemus(netns: NetNs) -> list[str]:
    """QEMU processes left in the namespace."""
    return [f"{p.pid} {p.name()}" for p in ns_processes(netns.name) if "qemu" in p.name()]


@pytest.mark.timeout(420)
def test_libvirt_restored_guests_take_their_own_reserved_address_on_the_bridge(
    netns: NetNs, image: ImageInfo
) -> None:
    """Bridged libvirt warm start: own IP, MAC and key per guest, plain restore and spare."""
    plan = DhcpPlan.create()
    ips = [str(plan.ip_for(i)) for i in (1, 2)]
    report, consoles, context = netns.scenario(WARM, image, ips, timeout=400)
    print("spawn -> session (s):", {k: round(v["seconds"], 3) for k, v in report["guests"].items()})

    assert report["spare_ready"] is True and report["spares_used"] == 1, report
    for i, name in ((1, "qemu1"), (2, "qemu2")):
        guest = report["guests"][name]
        assert guest["host"] == ips[i - 1], report
        assert guest["other_refused"], report
        # the host reached this IP at the guest's own MAC, not the template's
        assert f"{ips[i - 1]} lladdr {mac_for(i)}" in guest["neigh"], report
        text = consoles[f"log/{name}.console.log"]
        assert f"farm-init: network {mac_for(i)} {ips[i - 1]}/" in text, context
        assert f"farm-init: identity {name}" in text, context
        assert "farm-init: mounted" not in text, context  # restored, not booted
    assert len([s for s in report["snapshots"] if s.endswith(".bin")]) == 1, report["snapshots"]
    assert "br0" not in report["links_after"] and "vnet" not in report["links_after"], report
    assert not _qemus(netns)


@pytest.mark.timeout(420)
def test_libvirt_corrupt_bridged_snapshot_boots_cold_and_loses_no_set(
    netns: NetNs, image: ImageInfo
) -> None:
    """A damaged bridged snapshot: a cold boot at the reserved address, then a rebuilt
    template, and every set of a Distributor on restored guests finishes."""
    plan = DhcpPlan.create()
    ips = [str(plan.ip_for(i)) for i in (1, 2)]
    report, consoles, context = netns.scenario(CORRUPT, image, ips, timeout=400)

    assert report["corrupt_removed"] is True, report
    guest = report["guests"]["qemu1"]
    assert guest["host"] == ips[0] and f"lladdr {mac_for(1)}" in guest["neigh"], report
    assert "farm-init: mounted" in consoles["log-backend/qemu1.console.log"], context  # cold

    assert report["finished"] is True, context
    db = netns.dir / "pings.db"
    assert query(db, "SELECT state, count(*) FROM tasksets GROUP BY state") == [("finished", 3)]
    exits = query(db, "SELECT type FROM events WHERE task_id = 1 AND type LIKE 'EXIT%'")
    assert exits == [("EXIT",)] * 3, context
    assert query(netns.dir / "hey.db", "SELECT state FROM tasksets") == [("finished",)]
    dist_guests = [text for key, text in consoles.items() if key.startswith("log/")]
    assert dist_guests, context
    for text in dist_guests:  # every guest of the Distributor was restored, none booted
        assert "farm-init: network" in text and "farm-init: mounted" not in text, context
    assert len([s for s in report["snapshots"] if s.endswith(".bin")]) == 1, report["snapshots"]
    assert "br0" not in report["links_after"] and "vnet" not in report["links_after"], report
    assert not _qemus(netns)


@pytest.mark.timeout(420)
def test_libvirt_bridged_spare_of_a_sigkilled_farm_is_reaped_by_the_next(
    netns: NetNs, image: ImageInfo
) -> None:
    """A farm SIGKILLed with a bridged guest and its spare: the next farm reaps both QEMUs,
    and their taps go with them."""
    ips = [str(DhcpPlan.create().ip_for(1))]
    killed, _, context = netns.scenario(KILLED, image, ips, timeout=400, code=-9)
    pids = killed["pids"]
    assert "qemu1" in pids and any(n.startswith("farm-spare-") for n in pids), killed
    assert len(_qemus(netns)) == 2, context  # the embedded driver's QEMUs outlived farm
    report, _, context = netns.scenario(REAP, image, ips, timeout=400)
    assert set(pids) <= set(report["reaped"]), report
    assert not _qemus(netns), context
    assert "vnet" not in report["links_after"], report
