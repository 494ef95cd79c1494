"""Warm start on the bridged network: each restored guest takes its own MAC and address.

A virtio NIC's MAC is part of the saved device state, and the guest's kernel
keeps the address it configured: every guest restored from one template would
come up with the template's MAC and IP. So the template boots on a tap of its
own (``farm-taptPID`` on the bridge) with a MAC no machine has
(``52:54:00:fa:00:00``) and a static address below the reservations
(``farm.ip=``: no DHCP at all), and each restored guest finds in its identity
line (:mod:`farm.backend.snapshot`) a ``net`` entry with its reserved MAC, IP
and the gateway. /init (images/init.sh.in) sets them with ioctls (the MAC
through virtio-net's control queue, so QEMU's receive filter follows) before the
agent listens: the guest answers at the same address as after a cold boot with
farm's dhcpd. The template depends on the subnet, NIC model and gateway, which
are part of the snapshot key, so it is made once per image/profile/QEMU/network.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from farm.bridge.bridge import TAP_PREFIX, Bridge, TapNic, remove_tap
from farm.bridge.dhcp import RESERVED_OFFSET, DhcpPlan
from farm.profile import MachineProfile

#: the template's MAC: machine id 0, which no guest has
TEMPLATE_MAC = "52:54:00:fa:00:00"


@dataclass(frozen=True)
class WarmNet:
    """The bridged network of a warm-started backend: template NIC and per-guest identity."""

    plan: DhcpPlan
    model: str = "virtio-net-pci"
    onboard: bool = False
    bridge: Bridge | None = field(default=None, compare=False)  # where the template's tap goes

    @property
    def template_address(self) -> ipaddress.IPv4Interface:
        """The template's static address: just below the first reservation."""
        ip = self.plan.subnet.network_address + RESERVED_OFFSET
        return ipaddress.IPv4Interface(f"{ip}/{self.plan.subnet.prefixlen}")

    def profile(self, profile: MachineProfile) -> MachineProfile:
        """``profile`` for template and restored guests: NIC from the arguments, static IP."""
        static = f"farm.ip={self.template_address},{self.plan.bridge_ip}"
        return replace(profile, nic="", kernel_args=f"{profile.kernel_args} {static}".strip())

    def key(self) -> dict[str, Any]:
        """What the saved state depends on besides the command line (part of the key)."""
        return {
            "kind": "bridge",
            "subnet": str(self.plan.subnet),
            "gateway": str(self.plan.bridge_ip),
            "model": self.model,
            "onboard": self.onboard,
        }

    def nic_args(self, nic: TapNic) -> list[str]:
        """QEMU arguments of ``nic`` with this network's NIC model."""
        return nic.qemu_args(self.model, self.onboard)

    def identity(self, nic: TapNic) -> dict[str, str]:
        """The ``net`` entry of a restored guest's identity line: its MAC, IP/prefix, gateway."""
        return {
            "mac": nic.mac,
            "ip": f"{nic.ip}/{self.plan.subnet.prefixlen}",
            "gw": str(self.plan.bridge_ip),
        }

    @contextlib.contextmanager
    def template_nic(self) -> Iterator[list[str]]:
        """A tap on the bridge for the template guest: yields its QEMU arguments, removes it."""
        if self.bridge is None:
            raise ValueError("WarmNet.template_nic needs the bridge")
        tap = f"{TAP_PREFIX}t{os.getpid() % 1000000}"  # farm-down removes farm-tap*
        self.bridge.add_tap(tap)
        try:
            yield self.nic_args(TapNic(tap, TEMPLATE_MAC, self.template_address.ip))
        finally:
            remove_tap(tap)
