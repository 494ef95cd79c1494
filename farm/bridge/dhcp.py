"""farm's own DHCP server for the bridged network: address plan, dhcpd.conf, dhcpd process.

:class:`DhcpPlan` lays out the subnet (default ``10.200.40.0/21`` as seed
004): the bridge's own address first, then one fixed address per machine id
(``qemuN`` -> MAC ``52:54:00:fa:HH:LL`` with N in hex -> ``network + 10 + N``),
then a dynamic range up to the broadcast address; the three never overlap.
:func:`render_conf` fills the ``farm/bridge/dhcpd.conf`` template with it and
:class:`DhcpServer` runs ``dhcpd -f`` on the bridge as a child process with
its files under ``<state_dir>/dhcp``. Readiness of a guest is the agent
handshake, not the lease file; :meth:`DhcpServer.leases` is for diagnostics
(fixed-address bindings are not written to the lease file by dhcpd, only
dynamic ones). With ``dhcp = "external"`` the user runs a system-wide dhcpd
instead: :class:`ExternalDhcp` never starts one, :func:`check_reservations`
verifies the user's dhcpd.conf holds every reservation of the plan.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template

import psutil

from farm import resources
from farm.errors import ConfigError, NetworkError
from farm.procs import ProcessRegistry, terminate

log = logging.getLogger(__name__)

DEFAULT_SUBNET = "10.200.40.0/21"
DEFAULT_BRIDGE = "br0"
#: the reservation of machine id N is ``network + RESERVED_OFFSET + N``
RESERVED_OFFSET = 10
#: the dynamic range must hold at least this many addresses
MIN_DYNAMIC = 4
MAX_ID = 0xFFFF  # two bytes of the MAC
TEMPLATE = resources.dhcpd_template()
MAC_PREFIX = "52:54:00:fa"


def machine_id(name: str) -> int:
    """The id of machine ``name`` (the trailing number: ``qemu3`` -> 3)."""
    match = re.search(r"(\d+)$", name)
    if match is None or not 1 <= int(match.group(1)) <= MAX_ID:
        raise ConfigError(f"machine name {name!r} does not end in an id 1..{MAX_ID}")
    return int(match.group(1))


def mac_for(ident: int) -> str:
    """The MAC farm gives machine ``ident``: ``52:54:00:fa:HH:LL`` (QEMU's OUI)."""
    if not 1 <= ident <= MAX_ID:
        raise ConfigError(f"machine id must be 1..{MAX_ID}, got {ident}")
    return f"{MAC_PREFIX}:{ident >> 8:02x}:{ident & 0xFF:02x}"


@dataclass(frozen=True)
class DhcpPlan:
    """Address layout of the bridged network: bridge address, reservations, dynamic range."""

    subnet: ipaddress.IPv4Network
    machines: int  # reservations for ids 1..machines
    bridge: str = DEFAULT_BRIDGE
    lease_time: int = 3600

    @classmethod
    def create(
        cls, subnet: str = DEFAULT_SUBNET, machines: int = 14, bridge: str = DEFAULT_BRIDGE
    ) -> DhcpPlan:
        """A validated plan; ConfigError for a bad CIDR or a subnet too small for ``machines``."""
        if not isinstance(subnet, str):
            raise ConfigError(f"subnet must be a CIDR string like {DEFAULT_SUBNET}, got {subnet!r}")
        try:
            net = ipaddress.ip_network(subnet, strict=True)
        except ValueError as exc:
            raise ConfigError(
                f"subnet {subnet!r} is not an IPv4 network in CIDR form "
                f"(e.g. {DEFAULT_SUBNET}): {exc}"
            ) from exc
        if not isinstance(net, ipaddress.IPv4Network):
            raise ConfigError(f"subnet {subnet!r}: the bridged network is IPv4 only")
        if isinstance(machines, bool) or not isinstance(machines, int) or machines < 1:
            raise ConfigError(f"machines must be a positive integer, got {machines!r}")
        if machines > MAX_ID:
            raise ConfigError(f"at most {MAX_ID} machine reservations, got {machines}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", bridge or ""):
            raise ConfigError(f"bridge name {bridge!r} is not a valid interface name")
        needed = 1 + RESERVED_OFFSET + machines + MIN_DYNAMIC + 1  # + network/broadcast
        if net.num_addresses < needed:
            raise ConfigError(
                f"subnet {subnet} is too small: {machines} reservations, the bridge address "
                f"and a dynamic range of {MIN_DYNAMIC} need {needed} addresses, it has "
                f"{net.num_addresses} (use a shorter prefix, e.g. /{32 - needed.bit_length()})"
            )
        return cls(net, machines, bridge)

    @property
    def bridge_ip(self) -> ipaddress.IPv4Address:
        """The bridge's own address: the first host address."""
        return self.subnet.network_address + 1

    @property
    def bridge_interface(self) -> ipaddress.IPv4Interface:
        """The bridge's address with the subnet's prefix (what goes on ``br0``)."""
        return ipaddress.IPv4Interface(f"{self.bridge_ip}/{self.subnet.prefixlen}")

    def ip_for(self, ident: int) -> ipaddress.IPv4Address:
        """The fixed address of machine ``ident``."""
        if not 1 <= ident <= self.machines:
            raise NetworkError(
                f"machine id {ident} has no reservation (the plan reserves ids 1..{self.machines})"
            )
        return self.subnet.network_address + RESERVED_OFFSET + ident

    @property
    def range_start(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + RESERVED_OFFSET + self.machines + 1

    @property
    def range_end(self) -> ipaddress.IPv4Address:
        return self.subnet.broadcast_address - 1

    def reservations(self) -> list[tuple[str, str, ipaddress.IPv4Address]]:
        """(host name, MAC, IP) for every machine id."""
        return [(f"farm{i}", mac_for(i), self.ip_for(i)) for i in range(1, self.machines + 1)]


def host_line(name: str, mac: str, ip: ipaddress.IPv4Address | str) -> str:
    """One dhcpd.conf reservation: ``host NAME { hardware ethernet MAC; fixed-address IP; }``."""
    return f"host {name} {{ hardware ethernet {mac}; fixed-address {ip}; }}"


def render_conf(plan: DhcpPlan, template: Path | str | None = None) -> str:
    """dhcpd.conf for ``plan`` from the template file (default ``dhcp/dhcpd.conf``)."""
    path = Path(template) if template is not None else TEMPLATE
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the dhcpd.conf template {path}: {exc}") from exc
    hosts = "\n".join(host_line(name, mac, ip) for name, mac, ip in plan.reservations())
    try:
        return Template(text).substitute(
            network=plan.subnet.network_address,
            netmask=plan.subnet.netmask,
            broadcast=plan.subnet.broadcast_address,
            bridge_name=plan.bridge,
            bridge_ip=plan.bridge_ip,
            range_start=plan.range_start,
            range_end=plan.range_end,
            lease_time=plan.lease_time,
            max_lease_time=plan.lease_time * 2,
            hosts=hosts,
        )
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"dhcpd.conf template {path}: bad placeholder {exc}") from exc


@dataclass(frozen=True)
class Lease:
    """One entry of the lease file (diagnostics)."""

    mac: str
    ip: str
    state: str
    hostname: str | None = None


class DhcpServer:
    """``dhcpd -f -4`` on the bridge, started and stopped by farm; files in ``state_dir/dhcp``."""

    def __init__(
        self,
        plan: DhcpPlan,
        state_dir: Path,
        *,
        dhcpd: str = "dhcpd",
        registry: ProcessRegistry | None = None,
    ) -> None:
        self.plan = plan
        self.dir = Path(state_dir).resolve() / "dhcp"
        self.conf = self.dir / "dhcpd.conf"
        self.lease_file = self.dir / "dhcpd.leases"
        self.pidfile = self.dir / "dhcpd.pid"
        self.logfile = self.dir / "dhcpd.log"
        self.dhcpd = dhcpd
        self.registry = registry
        self._proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        """The dhcpd command line (foreground, IPv4, farm's own files, only the bridge)."""
        return [
            self.dhcpd, "-f", "-d", "-4", "-cf", str(self.conf), "-lf", str(self.lease_file),
            "-pf", str(self.pidfile), self.plan.bridge,
        ]  # fmt: skip

    @property
    def pid(self) -> int | None:
        """PID of the running dhcpd (ours, or one a previous ``net up`` left), else None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            pid = int(self.pidfile.read_text().strip())
            proc = psutil.Process(pid)
            if "dhcpd" in proc.name() and proc.status() != psutil.STATUS_ZOMBIE:
                return pid
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def running(self) -> bool:
        """True while a dhcpd of this state dir runs."""
        return self.pid is not None

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start dhcpd, wait until it wrote its pidfile. Idempotent."""
        if self.running():
            return
        binary = shutil.which(self.dhcpd)
        if binary is None:
            raise NetworkError(f"{self.dhcpd} not found (apt-get install isc-dhcp-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render_conf(self.plan))
        self.lease_file.touch()
        self.pidfile.unlink(missing_ok=True)
        log.info("starting %s", " ".join(self.argv()))
        with self.logfile.open("wb") as out:
            try:
                self._proc = subprocess.Popen(
                    self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                raise NetworkError(f"cannot start dhcpd: {exc}") from exc
        deadline = time.monotonic() + timeout
        delay = 0.01
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise NetworkError(
                    f"dhcpd exited with status {self._proc.returncode}:\n{self._tail()}"
                )
            if self.pidfile.exists() and self.pidfile.read_text().strip():
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        else:
            self.stop()
            raise NetworkError(f"dhcpd did not start within {timeout:.0f}s:\n{self._tail()}")
        if self.registry is not None:
            self.registry.record("dhcpd", self._proc.pid, "dhcpd")
        log.info(
            "dhcpd pid %d serving %s on %s", self._proc.pid, self.plan.subnet, self.plan.bridge
        )

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM dhcpd, then SIGKILL after ``timeout``. Idempotent."""
        pid = self.pid
        if pid is not None:
            terminate(pid, timeout=timeout)
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.send_signal(signal.SIGKILL)
                self._proc.wait()
            self._proc = None
        if self.registry is not None:
            self.registry.forget("dhcpd")
        self.pidfile.unlink(missing_ok=True)

    def leases(self) -> list[Lease]:
        """Entries of the lease file (MAC, IP, binding state); fixed addresses are not in it."""
        return read_leases(self.lease_file)

    def _tail(self, limit: int = 2000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def read_leases(path: Path) -> list[Lease]:
    """Entries of an isc-dhcp-server lease file (empty when there is none)."""
    from farm.extras import require

    IscDhcpLeases = require("isc_dhcp_leases", "bridge", "the bridged network").IscDhcpLeases
    if not path.exists():
        return []
    try:
        entries = IscDhcpLeases(str(path)).get()
    except (OSError, ValueError) as exc:
        raise NetworkError(f"cannot read {path}: {exc}") from exc
    return [
        Lease(str(e.ethernet), str(e.ip), str(e.binding_state), getattr(e, "hostname", None))
        for e in entries
    ]


# -- a system-wide dhcpd the user manages (config ``dhcp = "external"``) -----------------------

_COMMENT = re.compile(r"#[^\n]*")
_HOST = re.compile(r"\bhost\s+(\"[^\"]*\"|[^\s{]+)\s*\{([^{}]*)\}", re.IGNORECASE)
_HW = re.compile(r"\bhardware\s+ethernet\s+([0-9A-Fa-f:]+)\s*;", re.IGNORECASE)
_FIXED = re.compile(r"\bfixed-address\s+([^;]+);", re.IGNORECASE)


def parse_reservations(text: str) -> dict[str, list[str]]:
    """MAC (lower case) -> fixed addresses of every ``host { ... }`` block of a dhcpd.conf.

    Host blocks count wherever they are (top level, inside ``subnet`` or
    ``group``); comments are ignored; ``include`` files are not followed.
    A MAC declared in several host blocks collects all their addresses.
    """
    found: dict[str, list[str]] = {}
    for match in _HOST.finditer(_COMMENT.sub("", text)):
        body = match.group(2)
        hw = _HW.search(body)
        if hw is None:
            continue
        mac = ":".join(part.zfill(2) for part in hw.group(1).lower().split(":"))
        addresses = found.setdefault(mac, [])
        for fixed in _FIXED.finditer(body):
            addresses += [a.strip() for a in fixed.group(1).split(",") if a.strip()]
    return found


@dataclass(frozen=True)
class ReservationProblem:
    """A reservation farm needs that the user's dhcpd.conf lacks (``have`` empty) or gets wrong."""

    name: str
    mac: str
    ip: ipaddress.IPv4Address
    have: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the error message."""
        if not self.have:
            return f"{self.mac} -> {self.ip}: missing"
        return f"{self.mac} -> {self.ip}: reserved as {', '.join(self.have)} instead"


def reservation_problems(plan: DhcpPlan, text: str) -> list[ReservationProblem]:
    """The reservations of ``plan`` that the dhcpd.conf ``text`` lacks or maps elsewhere."""
    have = parse_reservations(text)
    problems = []
    for name, mac, ip in plan.reservations():
        addresses = tuple(have.get(mac, ()))
        if str(ip) not in addresses:
            problems.append(ReservationProblem(name, mac, ip, addresses))
    return problems


def check_reservations(plan: DhcpPlan, conf: Path | str) -> None:
    """Raise NetworkError unless ``conf`` reserves every machine's MAC -> IP of ``plan``.

    The error lists each missing or mismatched reservation and the
    ``host`` lines to put into the user's dhcpd.conf.
    """
    path = Path(conf)
    try:
        text = path.read_text()
    except OSError as exc:
        raise NetworkError(
            f"dhcp = 'external': cannot read the dhcpd config {path} ({exc}); set dhcpd_conf "
            "to the system dhcpd's config file"
        ) from exc
    problems = reservation_problems(plan, text)
    if not problems:
        log.info("%s has all %d reservations of farm", path, plan.machines)
        return
    listing = "\n".join(f"  {p.describe()}" for p in problems)
    lines = "\n".join(host_line(p.name, p.mac, p.ip) for p in problems)
    raise NetworkError(
        f"dhcp = 'external': {path} lacks {len(problems)} of farm's {plan.machines} "
        f"reservations (subnet {plan.subnet}, bridge {plan.bridge}):\n{listing}\n"
        f"add these lines to {path} (replacing wrong ones) and restart dhcpd:\n{lines}"
    )


class ExternalDhcp:
    """The user's system-wide dhcpd: farm never starts or stops it, it checks the reservations."""

    pid: int | None = None  # not farm's process

    def __init__(
        self,
        plan: DhcpPlan,
        conf: Path | str = "/etc/dhcp/dhcpd.conf",
        lease_file: Path | str = "/var/lib/dhcp/dhcpd.leases",
    ) -> None:
        self.plan = plan
        self.conf = Path(conf)
        self.lease_file = Path(lease_file)

    def running(self) -> bool:
        """False: no dhcpd of farm's runs (the user's is not farm's to report)."""
        return False

    def start(self, timeout: float = 10.0) -> None:
        """Check the user's config has farm's reservations (NetworkError listing what is off)."""
        check_reservations(self.plan, self.conf)

    def stop(self, timeout: float = 3.0) -> None:
        """Nothing: the user's dhcpd keeps running."""

    def leases(self) -> list[Lease]:
        """Entries of the system lease file (diagnostics)."""
        return read_leases(self.lease_file)
