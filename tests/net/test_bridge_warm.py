"""Warm start on the bridged network, inside a private network namespace (issue 18).

In a fresh namespace farm brings up ``br0`` and its dhcpd, builds one template
guest on a tap of its own, and restores guests from it: each restored guest
must answer at its OWN reserved address with its OWN MAC (the host's neighbour
table says which MAC answered), authenticate with its own key only, map the
template's RAM file privately (copy-on-write), and a Distributor's sets must
finish on restored guests that reach each other over the bridge. The backend's
two spawns after the first take its spare (restored ahead on a tap of its own,
renamed to the machine's tap at hand-over); once the backend is closed no tap,
QEMU or screen of it is left.
"""

from __future__ import annotations

import pytest

from farm.bridge.dhcp import DhcpPlan, mac_for
from farm.image import ImageInfo
from tests.helpers import query

from .conftest import NetNs, warm_scenario_prelude

SCENARIO = (
    warm_scenario_prelude("qemu", "state", 3)
    + r"""
import psutil
from farm import Distributor
from farm.backend.qemu import QemuBackend
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet
from farm.tasksets.example import Hey0TaskSet

backend = QemuBackend(config("log-backend"))
guests = []
try:
    backend.spawn("qemu9", "warm-up").destroy()  # builds the template
    for name in ("qemu1", "qemu2"):
        backend.spares.wait_ready(150.0)  # made once no spawn came for a second
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
        maps = Path(f"/proc/{guest.pid}/maps").read_text()
        report["guests"][name] = {
            "host": host, "seconds": took, "other_refused": refused, "neigh": neigh(host),
            "tap": guest.nic.tap, "spare_run_dir": guest.run_dir.name,
            "ram_maps": [line.split()[1] for line in maps.splitlines() if line.endswith(".ram")],
        }
    report["from_spare"] = backend.spares.used
finally:
    for guest in guests:
        guest.destroy()
    backend.close()
report["after_close"] = {
    "links": subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout,
    "procs": [p.info["name"] for p in psutil.process_iter(["name", "cmdline"])
              if str(base) in " ".join(p.info["cmdline"] or []) and p.pid != os.getpid()],
}
ping_all = "; ".join(f"ping -c 1 -w 60 {ip} >/dev/null || exit 1" for ip in ips) + "; echo ok"
pings = TaskSet([Task({"id": 1, "pkg": "shell", "config": {"command": ping_all},
                       "numberofjobs": 1, "x-run": range(3)})])
dist = Distributor(config("log"))
try:
    dist.add_job(pings, SqliteMonitor(base / "pings.db"))
    dist.add_job(Hey0TaskSet(), SqliteMonitor(base / "hey.db"))
    dist.set_max_machine_value(3)
    report["finished"] = dist.wait_finished(timeout=200)
finally:
    dist.close()
report["snapshots"] = sorted(p.name for p in (base / "state" / "snapshots").iterdir())
report["links_after"] = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                       text=True).stdout
print(json.dumps(report, default=str))
"""
)


@pytest.mark.timeout(330)
def test_restored_guests_take_their_own_reserved_address_on_the_bridge(
    netns: NetNs, image: ImageInfo
) -> None:
    """Warm start + bridge: own IP and MAC per guest, own key, shared RAM, sets finish."""
    plan = DhcpPlan.create()
    ips = [str(plan.ip_for(i)) for i in (1, 2, 3)]
    report, consoles, context = netns.scenario(SCENARIO, image, ips, timeout=320)
    print("spawn -> session (s):", {k: round(v["seconds"], 3) for k, v in report["guests"].items()})

    for i, name in ((1, "qemu1"), (2, "qemu2")):
        guest = report["guests"][name]
        assert guest["host"] == ips[i - 1], report
        assert guest["tap"] == f"farm-tap{i}", report  # the spare's tap, renamed
        assert guest["spare_run_dir"].startswith("farm-spare-"), report  # taken from the spare
        assert guest["other_refused"], report
        assert guest["ram_maps"] and all(p == "rw-p" for p in guest["ram_maps"]), report
        # the host reached this IP at the guest's own MAC, not the template's
        assert f"{ips[i - 1]} lladdr {mac_for(i)}" in guest["neigh"], report
        text = consoles[f"log-backend/{name}.console.log"]
        assert f"farm-init: network {mac_for(i)} {ips[i - 1]}/" in text, context
        assert "farm-init: mounted" not in text, context  # restored, not booted

    assert report["from_spare"] == 2, report
    assert "farm-tap" not in report["after_close"]["links"], report["after_close"]
    assert report["after_close"]["procs"] == [], report["after_close"]
    assert report["finished"] is True, context
    dist_guests = [text for key, text in consoles.items() if key.startswith("log/")]
    assert dist_guests, context
    for text in dist_guests:  # every guest of the Distributor was restored, none booted
        assert "farm-init: network" in text and "farm-init: mounted" not in text, context
    db = netns.dir / "pings.db"
    assert query(db, "SELECT state, count(*) FROM tasksets GROUP BY state") == [("finished", 3)]
    exits = query(db, "SELECT type FROM events WHERE task_id = 1 AND type LIKE 'EXIT%'")
    assert exits == [("EXIT",)] * 3, context
    assert query(netns.dir / "hey.db", "SELECT state FROM tasksets") == [("finished",)]
    # one template (device state + RAM file), its tap gone with the network
    assert len([s for s in report["snapshots"] if s.endswith(".bin")]) == 1, report["snapshots"]
    assert len([s for s in report["snapshots"] if s.endswith(".ram")]) == 1, report["snapshots"]
    assert "farm-tap" not in report["links_after"] and "br0" not in report["links_after"]
