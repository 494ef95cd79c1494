"""libvirt guests on farm's bridge, end to end inside a private network namespace.

In a fresh namespace a farm with ``backend = "libvirt"`` (embedded driver,
its own short state dir) and ``network = "bridge"`` brings up ``br0`` and its
own dhcpd, boots two TCG guests whose ``<interface type='bridge'>`` libvirt
wires to br0 itself (tap created and removed by libvirt, the machine's
reserved MAC), each guest takes its reserved address from farm's dhcpd, a
small job runs, and a shell task pings both reserved addresses, so whichever
guest runs it reaches the other over the bridge. Afterwards no tap, bridge
or process is left (the ``netns`` fixture checks the namespace).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.bridge.dhcp import DhcpPlan, mac_for
from farm.image import ImageInfo
from tests.helpers import query

from .conftest import NetNs

SCENARIO = r"""
import json, subprocess, sys
from pathlib import Path
from farm.config import FarmConfig
from farm import Distributor
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet
from farm.tasksets.example import Hey0TaskSet

base, images, ips = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
config = FarmConfig(  # cold boots: DHCP (warm starts: test_libvirt_bridge_warm.py)
    backend="libvirt", network="bridge", state_dir=base / "s", log_dir=base / "log",
    image_dir=images, idle_linger=30.0, boot_timeout=150.0, max_concurrent_boots=2,
    warm_start=False,
    profile={"accel": "tcg", "memory": 256},
)
# -w: keep trying while the other guest still boots
ping_all = "; ".join(f"ping -c 1 -w 120 {ip} >/dev/null || exit 1" for ip in ips) + "; echo ok"
pings = TaskSet([Task({"id": 1, "pkg": "shell", "config": {"command": ping_all},
                       "numberofjobs": 1, "x-run": range(2)})])
report = {}
dist = Distributor(config)
try:
    dist.add_job(Hey0TaskSet(), SqliteMonitor(base / "hey.db"))
    dist.add_job(pings, SqliteMonitor(base / "pings.db"))
    dist.set_max_machine_value(2)
    report["finished"] = dist.wait_finished(timeout=220)
    report["machines"] = dist.machines()
    report["bridge_addr"] = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "br0"],
                                           capture_output=True, text=True).stdout
    report["ports_while_running"] = subprocess.run(
        ["ip", "-o", "link", "show", "master", "br0"], capture_output=True, text=True).stdout
    conn = dist._backend.connection()
    report["domain_xml"] = [d.XMLDesc(0) for d in conn.listAllDomains(0)]
finally:
    dist.close()
report["links_after"] = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                       text=True).stdout
print(json.dumps(report, default=str))
"""


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(none)"


@pytest.mark.timeout(330)
def test_two_libvirt_guests_on_the_bridge_reach_each_other(netns: NetNs, image: ImageInfo) -> None:
    """br0 + farm's dhcpd in a namespace; 2 libvirt guests get reserved IPs and ping each other."""
    plan = DhcpPlan.create()
    ips = [str(plan.ip_for(i)) for i in (1, 2)]
    result = netns.python(
        SCENARIO, str(netns.dir), str(image.kernel.parent), ",".join(ips), timeout=300
    )
    logs = netns.dir / "log"
    consoles = {p.name: p.read_text(errors="replace") for p in sorted(logs.glob("*.console.log"))}
    context = (
        f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}\nconsoles:\n"
        + "\n".join(f"--- {k}\n{v[-1500:]}" for k, v in consoles.items())
        + f"\ndhcpd.log:\n{_tail(netns.dir / 's' / 'dhcp' / 'dhcpd.log')}"
        + f"\ndistributor.log:\n{_tail(logs / 'distributor.log', 3000)}"
    )
    assert result.returncode == 0, context
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["finished"] is True, context
    assert f"inet {plan.bridge_interface}" in report["bridge_addr"]

    # libvirt's own taps (vnetN) were on br0; the domains used the reserved MACs
    assert report["ports_while_running"].count("master br0") >= 2, report["ports_while_running"]
    assert "farm-tap" not in report["ports_while_running"]
    macs = " ".join(report["domain_xml"])
    for i in (1, 2):
        assert f"<mac address='{mac_for(i)}'/>" in macs, macs
    assert "<source bridge='br0'" in macs

    # both guests took their reserved addresses from farm's dhcpd (udhcpc)
    for i, ip in enumerate(ips, start=1):
        text = consoles.get(f"qemu{i}.console.log", "")
        assert f"farm-init: dhcp: {ip}/{plan.subnet.prefixlen}" in text, context

    # the small job finished; each ping variant exited 0 after reaching both guests
    assert query(netns.dir / "hey.db", "SELECT state FROM tasksets") == [("finished",)]
    db = netns.dir / "pings.db"
    assert query(db, "SELECT state, count(*) FROM tasksets GROUP BY state") == [("finished", 2)]
    exits = query(db, "SELECT type FROM events WHERE task_id = 1 AND type LIKE 'EXIT%'")
    assert exits == [("EXIT",)] * 2, context

    # after close(): libvirt removed its taps, farm its bridge and dhcpd
    assert "vnet" not in report["links_after"]
    assert "br0" not in report["links_after"]
    assert not (netns.dir / "s" / "dhcp" / "dhcpd.pid").exists()


EXTERNAL = r"""
import json, subprocess, sys
from pathlib import Path
from farm.config import FarmConfig
from farm import Distributor
from farm.errors import NetworkError
from farm.monitors import SqliteMonitor
from farm.bridge.bridge import plan_for
from farm.tasksets.example import Hey0TaskSet

base, images = Path(sys.argv[1]), Path(sys.argv[2])
conf = base / "site-dhcpd.conf"
config = FarmConfig(  # cold boots: DHCP from the site's dhcpd
    backend="libvirt", network="bridge", dhcp="external", dhcpd_conf=conf, warm_start=False,
    state_dir=base / "s", log_dir=base / "log", image_dir=images, boot_timeout=150.0,
    profile={"accel": "tcg", "memory": 256},
)
plan = plan_for(config)
# the site's own config: a subnet, a printer and only farm's first reservation
conf.write_text(
    "authoritative;\nping-check false;\n"
    f"subnet {plan.subnet.network_address} netmask {plan.subnet.netmask} {{\n"
    f"    range {plan.range_start} {plan.range_end};\n}}\n"
    "host printer { hardware ethernet 00:11:22:33:44:55; fixed-address 10.200.47.200; }\n"
    f"host farm1 {{ hardware ethernet 52:54:00:fa:00:01; fixed-address {plan.ip_for(1)}; }}\n"
)
report = {}
try:
    Distributor(config).close()
    report["refused"] = None
except NetworkError as exc:
    report["refused"] = str(exc)
report["links_refused"] = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                         text=True).stdout
# the user adds the lines farm printed, sets up the bridge and runs the site's dhcpd
with conf.open("a") as out:
    out.write("\n".join(l for l in report["refused"].splitlines() if l.startswith("host ")))
    out.write("\n")
for cmd in (["ip", "link", "add", "br0", "type", "bridge"],
            ["ip", "addr", "add", str(plan.bridge_interface), "dev", "br0"],
            ["ip", "link", "set", "br0", "up"]):
    subprocess.run(cmd, check=True)
(base / "leases").touch()
site = subprocess.Popen(["dhcpd", "-f", "-4", "-cf", str(conf), "-lf", str(base / "leases"),
                         "-pf", str(base / "site.pid"), "br0"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    dist = Distributor(config)
    try:
        dist.add_job(Hey0TaskSet(), SqliteMonitor(base / "hey.db"))
        report["finished"] = dist.wait_finished(timeout=200)
        report["farm_dhcpd_dir"] = (base / "s" / "dhcp").exists()
    finally:
        dist.close()
    report["links_after"] = subprocess.run(["ip", "-o", "link"], capture_output=True,
                                           text=True).stdout
    report["site_dhcpd_alive"] = site.poll() is None
finally:
    site.terminate()
    site.wait(10)
    subprocess.run(["ip", "link", "del", "br0"], check=False)
print(json.dumps(report))
"""


@pytest.mark.timeout(330)
def test_libvirt_guest_with_the_users_dhcpd(netns: NetNs, image: ImageInfo) -> None:
    """dhcp = "external": farm refuses a config lacking reservations, then uses the user's dhcpd."""
    result = netns.python(EXTERNAL, str(netns.dir), str(image.kernel.parent), timeout=300)
    logs = netns.dir / "log"
    context = (
        f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}\nconsole:\n"
        f"{_tail(logs / 'qemu1.console.log')}"
    )
    assert result.returncode == 0, context
    report = json.loads(result.stdout.strip().splitlines()[-1])
    refused = report["refused"]
    assert refused is not None and "lacks 15 of farm's 16 reservations" in refused
    assert "52:54:00:fa:00:02 -> 10.200.40.12: missing" in refused
    assert "52:54:00:fa:00:01" not in refused
    assert "br0" not in report["links_refused"]  # a failed check creates nothing

    assert report["finished"] is True, context
    assert "farm-init: dhcp: 10.200.40.11/21" in _tail(logs / "qemu1.console.log", 20000)
    assert report["farm_dhcpd_dir"] is False  # farm never ran a dhcpd of its own
    assert "br0" in report["links_after"]  # the user's bridge stays
    assert report["site_dhcpd_alive"] is True
