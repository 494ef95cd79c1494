"""Bridged-network pieces that need no netlink: tap names, QEMU NIC options, plan from config.

Creating bridges and taps needs root in a namespace: tests/net does that.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from farm.bridge.bridge import BridgeNetwork, TapNic, plan_for, tap_name
from farm.bridge.dhcp import DhcpServer
from farm.config import FarmConfig
from farm.errors import ConfigError


def test_tap_names() -> None:
    assert tap_name(1) == "farm-tap1"
    assert len(tap_name(65535)) <= 15  # IFNAMSIZ - 1


def test_tap_nic_qemu_args() -> None:
    nic = TapNic("farm-tap2", "52:54:00:fa:00:02", ipaddress.IPv4Address("10.200.40.12"))
    assert nic.qemu_args() == [
        "-netdev",
        "tap,id=net0,ifname=farm-tap2,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=net0,mac=52:54:00:fa:00:02",
    ]
    assert nic.qemu_args("lan9118", onboard=True) == [
        "-nic",
        "tap,id=net0,ifname=farm-tap2,script=no,downscript=no,model=lan9118,mac=52:54:00:fa:00:02",
    ]


def test_plan_from_config_reserves_more_ids_than_the_cap(tmp_path: Path) -> None:
    plan = plan_for(FarmConfig(state_dir=tmp_path, machine_cap=7))
    assert plan.machines >= 14
    assert str(plan.subnet) == "10.200.40.0/21"
    big = plan_for(FarmConfig(state_dir=tmp_path, machine_cap=100))
    assert big.machines == 200


def test_plan_honours_bridge_subnet_when_the_config_has_it(tmp_path: Path) -> None:
    class Cfg:
        state_dir = tmp_path
        machine_cap = 3
        bridge_subnet = "10.9.0.0/28"
        bridge_name = "br9"

    with pytest.raises(ConfigError, match="too small"):
        plan_for(Cfg())
    Cfg.bridge_subnet = "10.9.0.0/24"
    net = BridgeNetwork.from_config(Cfg())
    assert net.plan.bridge == "br9"
    assert str(net.bridge.address) == "10.9.0.1/24"
    assert isinstance(net.dhcp, DhcpServer)
    assert net.dhcp.dir == tmp_path.resolve() / "dhcp"
