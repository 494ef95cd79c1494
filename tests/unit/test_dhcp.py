"""dhcpd.conf rendering and the address plan of the bridged network (no processes)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from farm.bridge.dhcp import (
    DEFAULT_SUBNET,
    TEMPLATE,
    DhcpPlan,
    DhcpServer,
    mac_for,
    machine_id,
    render_conf,
)
from farm.errors import ConfigError, NetworkError

HOST = re.compile(r"host (\S+) \{ hardware ethernet (\S+); fixed-address (\S+); \}")


def test_template_file_is_package_data() -> None:
    assert Path(__file__).resolve().parents[2] / "farm" / "bridge" / "dhcpd.conf" == TEMPLATE
    assert TEMPLATE.is_file()


def test_default_plan_is_seed_004_subnet() -> None:
    plan = DhcpPlan.create()
    assert str(plan.subnet) == DEFAULT_SUBNET == "10.200.40.0/21"
    assert str(plan.bridge_interface) == "10.200.40.1/21"
    assert plan.bridge == "br0"


def test_mac_and_ip_derive_from_the_machine_id() -> None:
    plan = DhcpPlan.create(machines=300)
    assert mac_for(1) == "52:54:00:fa:00:01"
    assert mac_for(0x1FF) == "52:54:00:fa:01:ff"
    assert str(plan.ip_for(1)) == "10.200.40.11"
    assert str(plan.ip_for(3)) == "10.200.40.13"
    assert machine_id("qemu7") == 7
    with pytest.raises(ConfigError, match="does not end in an id"):
        machine_id("qemu")
    with pytest.raises(ConfigError):
        mac_for(0)
    with pytest.raises(NetworkError, match="no reservation"):
        plan.ip_for(301)


@pytest.mark.parametrize("subnet", ["10.200.40.0/21", "192.168.7.0/24", "172.30.0.0/27"])
def test_rendered_conf_reservations_range_and_bridge_never_overlap(subnet: str) -> None:
    plan = DhcpPlan.create(subnet, machines=8)
    conf = render_conf(plan)
    net = ipaddress.ip_network(subnet)
    assert "ping-check false;" in conf
    assert f"subnet {net.network_address} netmask {net.netmask} {{" in conf
    hosts = HOST.findall(conf)
    assert len(hosts) == 8
    macs = [mac for _, mac, _ in hosts]
    assert macs == [mac_for(i) for i in range(1, 9)]
    reserved = {ipaddress.IPv4Address(ip) for _, _, ip in hosts}
    assert len(reserved) == 8 and all(ip in net for ip in reserved)
    start, end = (ipaddress.IPv4Address(a) for a in re.findall(r"range (\S+) (\S+);", conf)[0])
    dynamic = {ipaddress.IPv4Address(a) for a in range(int(start), int(end) + 1)}
    assert len(dynamic) >= 4
    assert not dynamic & reserved
    assert all(ip in net for ip in dynamic)
    assert net.broadcast_address not in dynamic and net.network_address not in dynamic
    assert plan.bridge_ip in net
    assert plan.bridge_ip not in dynamic and plan.bridge_ip not in reserved
    assert "$" not in conf  # every placeholder filled


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("10.200.40.0/33", "not an IPv4 network in CIDR form"),
        ("10.200.400.0/21", "not an IPv4 network in CIDR form"),
        ("banana", "not an IPv4 network in CIDR form"),
        ("10.200.40.1/21", "has host bits set"),
        ("fd00::/64", "IPv4 only"),
        ("10.0.0.0/28", "too small"),
        ("10.0.0.0/32", "too small"),
    ],
)
def test_bad_subnets_raise_config_error(subnet: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DhcpPlan.create(subnet, machines=14)


def test_bad_machines_and_bridge_names() -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        DhcpPlan.create(machines=0)
    with pytest.raises(ConfigError, match="positive integer"):
        DhcpPlan.create(machines=True)
    with pytest.raises(ConfigError, match="interface name"):
        DhcpPlan.create(bridge="a-bridge-name-too-long")
    with pytest.raises(ConfigError, match="CIDR string"):
        DhcpPlan.create(42)  # type: ignore[arg-type]


def test_smallest_subnet_that_fits() -> None:
    plan = DhcpPlan.create("10.1.2.0/27", machines=14)  # 32 addresses: 1 + 10 + 14 + 4 + 1 + ...
    assert plan.range_start <= plan.range_end
    with pytest.raises(ConfigError, match="too small"):
        DhcpPlan.create("10.1.2.0/27", machines=17)


def test_missing_template_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the dhcpd\.conf template"):
        render_conf(DhcpPlan.create(), tmp_path / "nope.conf")
    bad = tmp_path / "bad.conf"
    bad.write_text("subnet $nonsense {}\n")
    with pytest.raises(ConfigError, match="bad placeholder"):
        render_conf(DhcpPlan.create(), bad)


def test_dhcpd_command_line_and_files_under_state_dir(tmp_path: Path) -> None:
    server = DhcpServer(DhcpPlan.create(), tmp_path)
    argv = server.argv()
    assert argv[:4] == ["dhcpd", "-f", "-d", "-4"]
    assert argv[argv.index("-cf") + 1] == str(tmp_path.resolve() / "dhcp" / "dhcpd.conf")
    assert argv[argv.index("-lf") + 1] == str(tmp_path.resolve() / "dhcp" / "dhcpd.leases")
    assert argv[argv.index("-pf") + 1] == str(tmp_path.resolve() / "dhcp" / "dhcpd.pid")
    assert argv[-1] == "br0"
    assert server.pid is None and not server.running()
    server.stop()  # idempotent without a process


def test_start_without_dhcpd_binary_is_a_network_error(tmp_path: Path) -> None:
    server = DhcpServer(DhcpPlan.create(), tmp_path, dhcpd="farm-no-such-dhcpd")
    with pytest.raises(NetworkError, match="not found"):
        server.start()


LEASES = """\
# The format of this file is documented in the dhcpd.leases(5) manual page.
lease 10.200.47.200 {
  starts 1 2026/11/23 12:00:00;
  ends 1 2026/11/23 13:00:00;
  cltt 1 2026/11/23 12:00:00;
  binding state active;
  next binding state free;
  rewind binding state free;
  hardware ethernet 02:00:00:00:00:42;
  client-hostname "probe";
}
lease 10.200.47.201 {
  starts 1 2026/11/23 11:00:00;
  ends 1 2026/11/23 11:30:00;
  binding state free;
  hardware ethernet 02:00:00:00:00:43;
}
"""


def test_leases_are_read_for_diagnostics(tmp_path: Path) -> None:
    server = DhcpServer(DhcpPlan.create(), tmp_path)
    assert server.leases() == []  # no file yet
    server.dir.mkdir(parents=True)
    server.lease_file.write_text(LEASES)
    leases = {(lease.mac, lease.ip, lease.state) for lease in server.leases()}
    assert ("02:00:00:00:00:42", "10.200.47.200", "active") in leases
    assert ("02:00:00:00:00:43", "10.200.47.201", "free") in leases
