"""``farm net up|down`` inside a private namespace: idempotent, dhcpd really serves leases.

A veth pair stands in for a guest NIC: one end on br0, busybox ``udhcpc`` on
the other. A reserved MAC gets its fixed address, any other MAC an address
of the dynamic range (which the lease file, read with isc_dhcp_leases, then
shows). ``net up`` leaves dhcpd running after its process exits; ``net down``
(from another process) stops it and removes taps and bridge.
"""

from __future__ import annotations

import ipaddress
import json
import shutil

import pytest

from farm.bridge import bridge
from farm.bridge.dhcp import DhcpPlan, mac_for

from .conftest import PYTHON, NetNs

CLI = r"""
import sys
from farm.cli.net import net
net.main(sys.argv[1:], prog_name="farm net")
"""

ATTACH = r"""
import sys
from farm.config import FarmConfig
from farm.bridge.bridge import BridgeNetwork
net = BridgeNetwork.from_config(FarmConfig(state_dir=sys.argv[1]))
for n in (1, 2):
    net.bridge.add_tap(f"farm-tap{n}")
net.bridge.add_tap("farm-tap1")  # idempotent
print(net.bridge.taps())
"""


def _sh(netns: NetNs, *argv: str) -> str:
    result = netns.run(list(argv), timeout=30)
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout


def _udhcpc(netns: NetNs, ifname: str) -> str:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is not installed (apt-get install busybox)")
    argv = [busybox, "udhcpc", "-i", ifname, "-f", "-q", "-n", "-t", "5", "-T", "1"]
    out = netns.run([*argv, "-s", "/bin/true"], timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "lease of" in text, text
    return text.split("lease of ", 1)[1].split()[0]


def test_net_up_down_serves_reserved_and_dynamic_leases(netns: NetNs) -> None:
    """net up twice, two DHCP clients, taps, then net down: nothing of farm's is left."""
    plan = DhcpPlan.create()
    env_state = str(netns.dir / "state")
    (netns.dir / "farm.toml").write_text(f'state_dir = "{env_state}"\n')

    for _ in range(2):  # idempotent
        up = netns.python(CLI, "up", timeout=30)
        assert up.returncode == 0, up.stderr
        assert "br0 10.200.40.1/21 up" in up.stdout
    status = json.loads(netns.python(CLI, "status", timeout=30).stdout)
    assert status["exists"] is True and status["dhcpd_pid"], status
    assert "inet 10.200.40.1/21" in _sh(netns, "ip", "-4", "-o", "addr", "show", "dev", "br0")

    bridge_mac = _sh(netns, "ip", "-o", "link", "show", "dev", "br0").split("link/ether ")[1][:17]
    assert bridge_mac == bridge.bridge_mac("br0")  # fixed: ports coming and going keep it

    # a "guest" with a reserved MAC and one with an unknown MAC, both on br0 via veth pairs
    for n, mac in ((1, mac_for(5)), (2, "02:00:00:00:00:42")):
        _sh(netns, "ip", "link", "add", f"vb{n}", "type", "veth", "peer", "name", f"vg{n}")
        _sh(netns, "ip", "link", "set", f"vg{n}", "address", mac, "up")
        _sh(netns, "ip", "link", "set", f"vb{n}", "master", "br0", "up")
    assert _udhcpc(netns, "vg1") == str(plan.ip_for(5))
    dynamic = ipaddress.IPv4Address(_udhcpc(netns, "vg2"))
    assert plan.range_start <= dynamic <= plan.range_end

    status = json.loads(netns.python(CLI, "status", timeout=30).stdout)
    leases = {(lease["mac"], lease["ip"]) for lease in status["leases"]}
    assert ("02:00:00:00:00:42", str(dynamic)) in leases, status

    attach = netns.python(ATTACH, env_state, timeout=30)
    assert attach.returncode == 0, attach.stderr
    assert "['farm-tap1', 'farm-tap2']" in attach.stdout
    links = _sh(netns, "ip", "-o", "link", "show", "master", "br0")
    assert "farm-tap1" in links and "farm-tap2" in links
    _sh(netns, "ip", "link", "del", "vb1")  # (a port with a lower MAC would have been taken)
    assert f"link/ether {bridge_mac} " in _sh(netns, "ip", "-o", "link", "show", "dev", "br0")

    for _ in range(2):  # idempotent
        down = netns.python(CLI, "down", timeout=30)
        assert down.returncode == 0, down.stderr
    links = _sh(netns, "ip", "-o", "link")
    assert "br0" not in links and "farm-tap" not in links
    status = json.loads(netns.python(CLI, "status", timeout=30).stdout)
    assert status["exists"] is False and status["dhcpd_pid"] is None
    # the netns fixture then asserts that no process (dhcpd!) is left in the namespace


def test_net_up_refuses_a_bad_subnet_before_touching_anything(netns: NetNs) -> None:
    """A subnet too small for the reservations is a usage error (exit 2), no bridge made."""
    script = (
        "import sys\n"
        "from farm.bridge.bridge import BridgeNetwork\n"
        "from farm.bridge.dhcp import DhcpPlan\n"
        "try:\n"
        "    BridgeNetwork(DhcpPlan.create('10.9.0.0/29'), sys.argv[1]).up()\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = netns.run([PYTHON, "-c", script, str(netns.dir)], timeout=30)
    assert "refused: subnet 10.9.0.0/29 is too small" in result.stdout, result.stderr
    assert "br0" not in _sh(netns, "ip", "-o", "link")
