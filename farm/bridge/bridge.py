"""The bridged network: bridge ``br0`` with its address, one tap per machine, farm's dhcpd.

Everything goes through pyroute2 (netlink) in the network namespace of the
calling process; every operation is idempotent (an existing bridge or tap is
reused, a missing one is not an error on removal). :class:`BridgeNetwork`
combines the bridge and :class:`~farm.bridge.dhcp.DhcpServer` (or, with
``dhcp = "external"``, the check of the user's dhcpd); :class:`BackendBridge`
is how a backend brings it up at its first guest and down at ``close()``;
:func:`net_up` / :func:`net_down` are the API behind ``farm net up|down``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from farm.bridge.dhcp import (
    DEFAULT_BRIDGE,
    DEFAULT_SUBNET,
    DhcpPlan,
    DhcpServer,
    ExternalDhcp,
    check_reservations,
    mac_for,
    machine_id,
)
from farm.errors import NetworkError
from farm.procs import ProcessRegistry

log = logging.getLogger(__name__)

TAP_PREFIX = "farm-tap"


def bridge_mac(name: str) -> str:
    """The fixed MAC farm gives its bridge ``name`` (locally administered, from the name).

    Why: a bridge whose MAC was never set takes the lowest MAC of its ports, so
    adding or removing a guest's tap (every spawn and destroy) could change it;
    the host then flushes the bridge's neighbour table and every guest keeps
    sending to the old MAC until it asks again.
    """
    digest = hashlib.sha256(name.encode()).digest()
    return "02:fa:" + ":".join(f"{b:02x}" for b in digest[:4])


def tap_name(ident: int) -> str:
    """The tap interface of machine ``ident``: ``farm-tapN``."""
    return f"{TAP_PREFIX}{ident}"


def _ipr() -> Any:
    from farm.extras import require

    return require("pyroute2", "bridge", "the bridged network").IPRoute()


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _wrap(what: str, exc: Exception) -> NetworkError:
    return NetworkError(f"{what}: {exc} (bridged networking needs root / CAP_NET_ADMIN)")


class Bridge:
    """A Linux bridge with one IPv4 address, and the taps attached to it."""

    def __init__(self, name: str, address: ipaddress.IPv4Interface) -> None:
        self.name = name
        self.address = address

    def exists(self) -> bool:
        """True if the bridge interface exists."""
        with _ipr() as ipr:
            return _index(ipr, self.name) is not None

    def create(self) -> None:
        """Create the bridge (STP off, no forward delay, fixed MAC), set its address, bring
        it up."""
        try:
            with _ipr() as ipr:
                idx = _index(ipr, self.name)
                if idx is None:
                    ipr.link(
                        "add",
                        ifname=self.name,
                        kind="bridge",
                        address=bridge_mac(self.name),  # fixed: taps come and go
                        br_stp_state=0,
                        br_forward_delay=0,
                    )
                    idx = _index(ipr, self.name)
                    log.info("created bridge %s", self.name)
                if idx is None:
                    raise NetworkError(f"bridge {self.name} vanished right after creation")
                have = {
                    (a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                    for a in ipr.get_addr(index=idx, family=2)
                }
                want = (str(self.address.ip), self.address.network.prefixlen)
                if want not in have:
                    ipr.addr("add", index=idx, address=want[0], prefixlen=want[1])
                ipr.link("set", index=idx, state="up")
        except NetworkError:
            raise
        except Exception as exc:  # pyroute2 raises NetlinkError/OSError
            raise _wrap(f"cannot set up bridge {self.name}", exc) from exc

    def remove(self) -> None:
        """Delete the bridge (its taps are detached by the kernel). Idempotent."""
        try:
            with _ipr() as ipr:
                idx = _index(ipr, self.name)
                if idx is not None:
                    ipr.link("del", index=idx)
                    log.info("removed bridge %s", self.name)
        except Exception as exc:
            raise _wrap(f"cannot remove bridge {self.name}", exc) from exc

    def add_tap(self, name: str) -> None:
        """Create tap ``name`` (persistent, for QEMU to open), attach it, bring it up."""
        try:
            with _ipr() as ipr:
                bridge = _index(ipr, self.name)
                if bridge is None:
                    raise NetworkError(f"bridge {self.name} does not exist (run `farm net up`)")
                idx = _index(ipr, name)
                if idx is None:
                    ipr.link("add", ifname=name, kind="tuntap", mode="tap")
                    idx = _index(ipr, name)
                if idx is None:
                    raise NetworkError(f"tap {name} vanished right after creation")
                ipr.link("set", index=idx, master=bridge, state="up")
                log.debug("tap %s on %s", name, self.name)
        except NetworkError:
            raise
        except Exception as exc:
            raise _wrap(f"cannot create tap {name}", exc) from exc

    def taps(self) -> list[str]:
        """Names of farm's taps (``farm-tap*``) in this namespace."""
        with _ipr() as ipr:
            names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
        return sorted(n for n in names if isinstance(n, str) and n.startswith(TAP_PREFIX))


def remove_tap(name: str) -> None:
    """Delete tap ``name``. Idempotent."""
    try:
        with _ipr() as ipr:
            idx = _index(ipr, name)
            if idx is not None:
                ipr.link("del", index=idx)
                log.debug("removed tap %s", name)
    except Exception as exc:
        raise _wrap(f"cannot remove tap {name}", exc) from exc


@dataclass(frozen=True)
class TapNic:
    """A guest's NIC on the bridge: its tap, reserved MAC and IP."""

    tap: str
    mac: str
    ip: ipaddress.IPv4Address

    def qemu_args(self, model: str = "virtio-net-pci", onboard: bool = False) -> list[str]:
        """QEMU options: a NIC of ``model`` (the board NIC with ``onboard``) on the tap."""
        netdev = f"tap,id=net0,ifname={self.tap},script=no,downscript=no"
        if onboard:
            return ["-nic", f"{netdev},model={model},mac={self.mac}"]
        return [
            "-netdev",
            netdev,
            "-device",
            f"{model or 'virtio-net-pci'},netdev=net0,mac={self.mac}",
        ]

    def release(self) -> None:
        """Remove the tap (the guest is gone). Idempotent; failures are logged."""
        try:
            remove_tap(self.tap)
        except NetworkError as exc:
            log.warning("%s", exc)


def plan_for(config: Any) -> DhcpPlan:
    """The address plan of ``config`` (``bridge_subnet``/``bridge_name`` when it has them)."""
    cap = int(getattr(config, "machine_cap", 7))
    return DhcpPlan.create(
        getattr(config, "bridge_subnet", DEFAULT_SUBNET),
        machines=max(16, 2 * cap),  # names qemuN may run past the cap while machines retire
        bridge=getattr(config, "bridge_name", DEFAULT_BRIDGE),
    )


def check_bridge_support(config: Any) -> None:
    """Raise a FarmError saying what bridged networking lacks here (root, dhcpd, plan)."""
    plan = plan_for(config)  # ConfigError for a bad subnet
    if os.geteuid() != 0:
        raise NetworkError("network = 'bridge' needs root (bridge, taps and dhcpd)")
    if _external(config):
        check_reservations(plan, _dhcpd_conf(config))
    elif shutil.which("dhcpd") is None:
        raise NetworkError("dhcpd not found (apt-get install isc-dhcp-server)")
    if not Path("/dev/net/tun").exists():
        raise NetworkError("/dev/net/tun is missing: QEMU cannot open taps (modprobe tun)")


def _external(config: Any) -> bool:
    return getattr(config, "dhcp", "farm") == "external"


def _dhcpd_conf(config: Any) -> Path:
    return Path(getattr(config, "dhcpd_conf", "/etc/dhcp/dhcpd.conf"))


class BridgeNetwork:
    """Bridge + taps + farm's dhcpd as one unit: ``up()`` / ``down()``, or ``with``.

    With ``external_conf`` (config ``dhcp = "external"``) the DHCP server is the
    user's system-wide dhcpd: ``up()`` checks that config has every reservation
    (before creating anything) instead of starting a dhcpd, ``down()`` stops none.
    """

    def __init__(
        self,
        plan: DhcpPlan,
        state_dir: Path,
        *,
        registry: ProcessRegistry | None = None,
        dhcpd: str = "dhcpd",
        external_conf: Path | None = None,
    ) -> None:
        self.plan = plan
        self.bridge = Bridge(plan.bridge, plan.bridge_interface)
        self.external = external_conf is not None
        self.dhcp: DhcpServer | ExternalDhcp = (
            ExternalDhcp(plan, external_conf)
            if external_conf is not None
            else DhcpServer(plan, state_dir, dhcpd=dhcpd, registry=registry)
        )
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any, *, registry: ProcessRegistry | None = None) -> BridgeNetwork:
        """The bridged network of a FarmConfig."""
        external = _dhcpd_conf(config) if _external(config) else None
        return cls(
            plan_for(config), Path(config.state_dir), registry=registry, external_conf=external
        )

    def up(self) -> None:
        """Create the bridge and start dhcpd on it (external: check, then create). Idempotent."""
        with self._lock:
            if self.external:
                self.dhcp.start()  # the reservation check: nothing created if it fails
                self.bridge.create()
                return
            self.bridge.create()
            try:
                self.dhcp.start()
            except BaseException:
                self.bridge.remove()
                raise

    def down(self) -> None:
        """Stop dhcpd, remove every farm tap and the bridge. Idempotent, best effort."""
        with self._lock:
            errors: list[Exception] = []
            try:
                self.dhcp.stop()
            except Exception as exc:
                errors.append(exc)
            try:
                for tap in self.bridge.taps():
                    remove_tap(tap)
            except Exception as exc:
                errors.append(exc)
            try:
                self.bridge.remove()
            except Exception as exc:
                errors.append(exc)
            if errors:
                raise NetworkError(f"network not fully removed: {errors[0]}") from errors[0]

    def add_machine(self, ident: int) -> tuple[str, str, ipaddress.IPv4Address]:
        """Create machine ``ident``'s tap; return (tap, MAC, reserved IP)."""
        ip = self.plan.ip_for(ident)
        tap = tap_name(ident)
        self.bridge.add_tap(tap)
        return tap, mac_for(ident), ip

    def reservation(self, name: str) -> tuple[str, ipaddress.IPv4Address]:
        """(MAC, reserved IP) of machine ``name`` (``qemuN``); creates nothing."""
        ident = machine_id(name)
        return mac_for(ident), self.plan.ip_for(ident)

    def attach(self, name: str) -> TapNic:
        """Create the tap of machine ``name`` (``qemuN``) and describe its NIC."""
        tap, mac, ip = self.add_machine(machine_id(name))
        return TapNic(tap, mac, ip)

    def ensure_up(self) -> bool:
        """Bring the network up unless it is up already; True if this call brought it up.

        Up means farm's dhcpd runs; with an external dhcpd, that the bridge exists
        (the reservations are checked either way when this call brings it up).
        """
        if self.external:
            existed = self.bridge.exists()
            self.up()
            return not existed
        if self.dhcp.running():
            self.bridge.create()  # idempotent: make sure the bridge and its address exist
            return False
        self.up()
        return True

    def __enter__(self) -> BridgeNetwork:
        self.up()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()


class BackendBridge:
    """A backend's bridged network: brought up at first use, down at close() only if it did."""

    def __init__(self, config: Any, registry: ProcessRegistry | None = None) -> None:
        self.config = config
        self.registry = registry
        self._net: BridgeNetwork | None = None
        self._owned = False
        self._lock = threading.Lock()

    def network(self) -> BridgeNetwork:
        """The bridged network, up (bridge + dhcpd, or the external dhcpd's check passed)."""
        with self._lock:
            if self._net is None:
                net = BridgeNetwork.from_config(self.config, registry=self.registry)
                self._owned = net.ensure_up()
                self._net = net
            return self._net

    def close(self) -> None:
        """Take the network down if :meth:`network` brought it up; forget it either way."""
        with self._lock:
            net, owned, self._net, self._owned = self._net, self._owned, None, False
        if net is not None and owned:
            net.down()


def net_up(config: Any) -> BridgeNetwork:
    """Bring the bridged network of ``config`` up and leave it running (``farm net up``)."""
    net = BridgeNetwork.from_config(config)
    net.up()
    return net


def net_down(config: Any) -> None:
    """Tear down what :func:`net_up` (or a dead farm) left: dhcpd, taps, bridge."""
    BridgeNetwork.from_config(config).down()
