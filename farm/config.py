"""Farm configuration: one frozen dataclass, loadable from ``farm.toml``, validated at load.

Every field has a default, so ``Distributor()`` needs no file. A ``farm.toml``
in the working directory (or the path in ``FARM_CONFIG``) is read when present::

    backend = "qemu"          # "libvirt" (default), "qemu", or "local" (agent processes)
    max_machines = 3          # initial limit, changeable at run time
    machine_cap = 7           # highest limit set_max_machine_value accepts
    [profile]                 # machine profile, see farm.profile.MachineProfile
    memory = 256
    [[hypervisors]]           # several libvirt hosts (see HypervisorConfig, docs/multihost.md)
    uri = "qemu+ssh://farm@rack1/system"
    max_machines = 4
    network = "bridge"
    image_dir = "/var/lib/farm/images"
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from farm.errors import ConfigError

BACKENDS = ("libvirt", "qemu", "local")
NETWORKS = ("user", "bridge")
DHCP_MODES = ("farm", "external")


@dataclass(frozen=True)
class FarmConfig:
    """What a farm needs to know; ``__init__`` records, ``validate`` checks."""

    state_dir: Path = Path(".farm")
    log_dir: Path = Path("log")
    image_dir: Path = Path("images")  # where `farm image build` wrote image.elf + initrd.img
    backend: str = "libvirt"
    libvirt_uri: str | None = None  # None: qemu:///embed?root=<state_dir>/libvirt
    network: str = "user"
    rescan_interval: float = 5.0  # existing targets: s between probes of unavailable hosts
    bridge_name: str = "br0"  # network = "bridge": bridge farm creates (taps farm-tapN)
    bridge_subnet: str = "10.200.40.0/21"  # bridge address .1, reservations, dynamic range
    dhcp: str = "farm"  # bridge: "farm" starts its own dhcpd, "external": the user's (checked)
    dhcpd_conf: Path = Path("/etc/dhcp/dhcpd.conf")  # dhcp = "external": the user's dhcpd config
    max_machines: int = 1
    machine_cap: int = 7
    set_tries: int = 3
    boot_timeout: float = 120.0  # s from spawn to agent handshake (TCG is slow)
    boot_retries: int = 5  # consecutive failed boots of one slot before it gives up
    heartbeat: float = 1.0  # agent heartbeat interval (s)
    heartbeat_timeout: float = 3.0  # silence after which a guest counts as hung
    max_concurrent_boots: int = 2
    warm_start: bool = False  # qemu backend: restore guests from a saved snapshot
    idle_linger: float = 2.0  # s an idle machine waits for new work before shutting down
    set_time_limit: float | None = None  # s; sets still running then are stopped (finished)
    agent_port: int = 3001
    token: str | None = None
    journal: bool = True
    # log/distributor.log: "auto" (only if the application set up no logging), true, a path,
    # or "" / false (never)
    log_file: str | bool = "auto"
    profile: dict[str, Any] = field(default_factory=dict)  # overrides of the default profile
    # several libvirt hypervisor hosts (tables or HypervisorConfig); empty: one backend as above
    hypervisors: tuple[HypervisorConfig, ...] = ()
    hypervisor_retry_max: float = 60.0  # s: cap of a lost/failing host's exponential back-off
    # which protocol spawned guests speak: "" = the profile's session, "farm" or "genode"
    session: str = ""
    genode_binaries: Path | None = None  # Genode: taskgen's bin/ dir, <dir>/<pkg> is uploaded
    event_timeout: float | None = None  # Genode: s of silence after which a guest is replaced

    def __post_init__(self) -> None:
        for name in ("state_dir", "log_dir", "image_dir", "dhcpd_conf"):
            _path(name, getattr(self, name))
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        object.__setattr__(self, "log_dir", Path(self.log_dir))
        object.__setattr__(self, "image_dir", Path(self.image_dir))
        if isinstance(self.dhcpd_conf, str):
            object.__setattr__(self, "dhcpd_conf", Path(self.dhcpd_conf))
        if isinstance(self.genode_binaries, str):
            binaries = Path(self.genode_binaries) if self.genode_binaries else None
            object.__setattr__(self, "genode_binaries", binaries)
        object.__setattr__(self, "hypervisors", _hypervisors(self.hypervisors, self))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.network not in NETWORKS:
            raise ConfigError(f"network must be one of {', '.join(NETWORKS)}, got {self.network!r}")
        for name in ("backend", "network", "dhcp", "bridge_subnet"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.bridge_name, str) or not _IFNAME.fullmatch(self.bridge_name):
            raise ConfigError(
                f"bridge_name must be an interface name (letters, digits, _.-, 1..15), "
                f"got {self.bridge_name!r}"
            )
        _token(self.token)
        if self.dhcp not in DHCP_MODES:
            raise ConfigError(f"dhcp must be one of {', '.join(DHCP_MODES)}, got {self.dhcp!r}")
        if not isinstance(self.dhcpd_conf, Path):
            raise ConfigError(f"dhcpd_conf must be a file path, got {self.dhcpd_conf!r}")
        try:
            subnet = ipaddress.ip_network(self.bridge_subnet)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bridge_subnet {self.bridge_subnet!r} is not a CIDR: {exc}") from exc
        if subnet.version != 4 or subnet.prefixlen > 28:
            raise ConfigError(f"bridge_subnet {self.bridge_subnet!r}: need IPv4, /28 or larger")
        if self.libvirt_uri is not None:
            check_libvirt_uri(self.libvirt_uri)
        _int_range("machine_cap", self.machine_cap, 1, 1024)
        _int_range("max_machines", self.max_machines, 1, self.machine_cap)
        _int_range("set_tries", self.set_tries, 1, 1000)
        _int_range("boot_retries", self.boot_retries, 1, 1000)
        _int_range("max_concurrent_boots", self.max_concurrent_boots, 1, 1024)
        for name in ("warm_start", "journal"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.warm_start and self.backend != "qemu":
            raise ConfigError(f"warm_start needs backend = 'qemu', not {self.backend!r}")
        _int_range("agent_port", self.agent_port, 1, 65535)
        for name in ("boot_timeout", "heartbeat", "heartbeat_timeout", "rescan_interval"):
            _positive(name, getattr(self, name))
        _positive("idle_linger", self.idle_linger, allow_zero=True)
        if not isinstance(self.log_file, str | bool):
            raise ConfigError(
                f"log_file must be 'auto', true, false or a path, got {self.log_file!r}"
            )
        if self.set_time_limit is not None:
            _positive("set_time_limit", self.set_time_limit)
        if self.heartbeat_timeout <= self.heartbeat:
            raise ConfigError("heartbeat_timeout must be larger than heartbeat")
        if not isinstance(self.profile, dict):
            raise ConfigError("profile must be a table of machine-profile keys")
        _positive("hypervisor_retry_max", self.hypervisor_retry_max)
        if self.hypervisors and self.backend != "libvirt":
            raise ConfigError(f"hypervisors need backend = 'libvirt', not {self.backend!r}")
        if self.session not in ("", "farm", "genode"):
            raise ConfigError(f"session must be 'farm' or 'genode', got {self.session!r}")
        if self.event_timeout is not None:
            _positive("event_timeout", self.event_timeout)

    def replace(self, **changes: Any) -> FarmConfig:
        """A copy with some fields changed (validated)."""
        _check_keys(changes)
        return dataclasses.replace(self, **changes)

    @property
    def resolved_libvirt_uri(self) -> str:
        if self.libvirt_uri:
            return self.libvirt_uri
        return f"qemu:///embed?root={(self.state_dir / 'libvirt').resolve()}"

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> FarmConfig:
        """Read ``path`` (or $FARM_CONFIG, or ./farm.toml when present), apply overrides."""
        data: dict[str, Any] = {}
        if path is None:
            env = os.environ.get("FARM_CONFIG")
            path = Path(env) if env else (Path("farm.toml") if Path("farm.toml").exists() else None)
        if path is not None:
            path = Path(path)
            try:
                data = tomllib.loads(path.read_text())
            except FileNotFoundError as exc:
                raise ConfigError(f"config file {path} not found") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
        data.update({k: v for k, v in overrides.items() if v is not None})
        _check_keys(data, where=str(path) if path else "arguments")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{path or 'config'}: {exc}") from exc


@dataclass(frozen=True)
class HypervisorConfig:
    """One libvirt hypervisor host of a multi-host farm (a ``[[hypervisors]]`` table).

    ``max_machines`` caps the guests on this host (the Distributor's limit is
    the total, shared out over the hosts). ``network``: ``user`` (hostfwd on the
    host) or ``bridge`` (the host's own bridge ``bridge_name`` on
    ``bridge_subnet``, whose dhcpd holds farm's reservations). ``image_dir``:
    a directory on that host where farm uploads the guest kernel and initrd as
    libvirt storage volumes; None means the host sees this machine's image
    paths (local or shared file system).
    """

    uri: str
    name: str = ""
    max_machines: int = 7
    network: str = "user"
    bridge_name: str = "br0"
    bridge_subnet: str = "10.200.40.0/21"
    image_dir: str | None = None

    @property
    def uploads(self) -> bool:
        """True when the host has its own file system (images uploaded to ``image_dir``)."""
        return self.image_dir is not None


_HV_KEYS = {f.name for f in dataclasses.fields(HypervisorConfig)}


def _hypervisors(value: object, cfg: FarmConfig) -> tuple[HypervisorConfig, ...]:
    """Validate ``hypervisors``: a list of tables (or HypervisorConfig); errors name the key."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ConfigError("hypervisors must be a list of tables ([[hypervisors]] in farm.toml)")
    hosts: list[HypervisorConfig] = []
    for i, item in enumerate(value):
        where = f"hypervisors[{i}]"
        if isinstance(item, HypervisorConfig):
            item = dataclasses.asdict(item)
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table with at least uri, got {item!r}")
        unknown = sorted(set(item) - _HV_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        if "uri" not in item:
            raise ConfigError(f"{where}.uri is missing (e.g. qemu+ssh://user@host/system)")
        data = {
            "network": cfg.network,
            "bridge_name": cfg.bridge_name,
            "bridge_subnet": cfg.bridge_subnet,
            **item,
        }
        hosts.append(_hypervisor(where, data, cfg))
    names = [h.name for h in hosts]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"hypervisors[{i}].name {name!r} is used twice")
    return tuple(hosts)


def _hypervisor(where: str, data: dict[str, Any], cfg: FarmConfig) -> HypervisorConfig:
    """One validated HypervisorConfig (``where`` prefixes every error)."""
    uri = data["uri"]
    try:
        check_libvirt_uri(uri)
    except ConfigError as exc:
        raise ConfigError(f"{where}.uri: {exc}") from exc
    name = data.get("name") or urlsplit(uri).hostname or f"host{where[12:-1]}"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
        raise ConfigError(f"{where}.name {name!r}: letters, digits, _.@- (1..64)")
    if "max_machines" in data:
        _int_range(f"{where}.max_machines", data["max_machines"], 1, 1024)
    if data["network"] not in NETWORKS:
        raise ConfigError(
            f"{where}.network must be one of {', '.join(NETWORKS)}, got {data['network']!r}"
        )
    bridge = data["bridge_name"]
    if not isinstance(bridge, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", bridge):
        raise ConfigError(f"{where}.bridge_name {bridge!r} is not an interface name")
    try:
        subnet = ipaddress.ip_network(data["bridge_subnet"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.bridge_subnet {data['bridge_subnet']!r}: {exc}") from exc
    if subnet.version != 4 or subnet.prefixlen > 28:
        raise ConfigError(f"{where}.bridge_subnet {subnet}: need IPv4, /28 or larger")
    image_dir = data.get("image_dir")
    if image_dir is not None and (not isinstance(image_dir, str) or not image_dir.startswith("/")):
        raise ConfigError(f"{where}.image_dir must be an absolute path on that host")
    return HypervisorConfig(
        uri=uri,
        name=name,
        max_machines=data.get("max_machines", cfg.machine_cap),
        network=data["network"],
        bridge_name=bridge,
        bridge_subnet=str(subnet),
        image_dir=image_dir,
    )


def check_libvirt_uri(uri: str) -> None:
    """Reject URIs libvirt would not understand before anything starts."""
    if not isinstance(uri, str) or "://" not in uri or not uri.split("://")[0]:
        raise ConfigError(f"libvirt_uri {uri!r} is not a libvirt URI (e.g. qemu:///system)")
    scheme = uri.split("://")[0]
    if not (scheme == "qemu" or scheme.startswith("qemu+") or scheme in ("test",)):
        raise ConfigError(f"libvirt_uri {uri!r}: farm drives QEMU; use qemu:// or qemu+ssh://")


def _check_keys(data: dict[str, Any], where: str = "arguments") -> None:
    known = {f.name for f in dataclasses.fields(FarmConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown config key(s) {', '.join(unknown)}")


def _int_range(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def _positive(name: str, value: object, allow_zero: bool = False) -> None:
    """A finite number > 0 (>= 0 with ``allow_zero``): NaN would disable every timeout check."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):  # type: ignore[arg-type,operator]
        raise ConfigError(f"{name} must be a finite positive number, got {value!r}")


_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
#: the token travels to the guest and over the wire: printable, no blanks, bounded
_TOKEN = re.compile(r"[\x21-\x7e]{1,1024}")


def _path(name: str, value: object) -> None:
    """A non-empty path given as a string or Path (``state_dir = 5`` names the key)."""
    if not isinstance(value, str | Path) or str(value) == "" or "\0" in str(value):
        raise ConfigError(f"{name} must be a non-empty path, got {value!r}")


def _token(value: object) -> None:
    """None (farm makes one) or a non-empty printable string without blanks."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigError(f"token must be a string, got {type(value).__name__}")
    if not _TOKEN.fullmatch(value):
        raise ConfigError(
            "token must be 1..1024 printable characters without blanks"
            + (" (it is empty)" if value == "" else "")
        )
