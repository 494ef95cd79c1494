"""The libvirt backend's pure parts: URIs, the embedded driver's qemu.conf, domain XML.

No libvirt import here (unit-testable without a hypervisor).
``domain_xml(spec)`` renders a transient domain: direct kernel boot, no
disks, the serial console on a pty (logged to a file by QEMU when the host is
local), user-mode networking with one hostfwd to the agent added through
``<qemu:commandline>`` (libvirt 9.0 rejects the passt backend; the NIC gets
its own PCI slot) or, on farm's bridge, an ``<interface type='bridge'>``
whose tap libvirt creates and removes itself (the machine's reserved MAC,
so farm's dhcpd hands it the reserved IP), and farm's own metadata element (namespace
:data:`FARM_NS`), which is how farm recognises its domains and never touches
anyone else's. ``parse_marker`` and ``serial_pty`` read a live domain's XML.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from farm.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

FARM_NS = "urn:farm:guest:1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NETDEV_ID = "farmnet"
NIC_PCI_ADDR = "0x10"  # the passthrough NIC's own PCI slot, clear of libvirt's devices

#: NIC models that are PCI devices (``-device MODEL,netdev=...,addr=0x10``); other
#: ``*-device`` models are plain devices (virtio-mmio), the rest board NICs (``-nic``).
PCI_NICS = frozenset(
    {"virtio-net-pci", "e1000", "e1000e", "igb", "rtl8139", "ne2k_pci", "pcnet", "vmxnet3"}
    | {f"i8255{n}" for n in ("0", "1", "7a", "7b", "7c", "8a", "8b", "9a", "9b", "9c", "9er")}
    | {"i82562", "i82801", "tulip", "e1000-82544gc", "e1000-82545em"}
)
_ARCHES = {"i386": "i686", "arm": "armv7l"}

QEMU_CONF_HEADER = "# Written by farm (farm.backend.libvirt); remove this line to edit it.\n"
QEMU_CONF_ROOT = 'user = "root"\ngroup = "root"\n'
QEMU_CONF = (
    'stdio_handler = "file"\n'  # QEMU writes logs itself: no virtlogd daemon needed
    'security_driver = "none"\n'  # no AppArmor/SELinux labelling in a private root
    "dynamic_ownership = 0\n"  # never chown the user's kernel/initrd/log files
    "remember_owner = 0\n"
)
LIBVIRT_QEMU_USER = "libvirt-qemu"
SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path), NUL included


def embed_root(uri: str) -> Path | None:
    """The ``root`` of a ``qemu:///embed?root=...`` URI, or None for other URIs."""
    parts = urlsplit(uri)
    if parts.scheme != "qemu" or parts.path != "/embed":
        return None
    roots = parse_qs(parts.query).get("root")
    if not roots or not roots[0].startswith("/"):
        raise ConfigError(f"libvirt URI {uri!r}: the embedded driver needs root=<absolute path>")
    return Path(roots[0])


def embed_socket_hint(uri: str, name: str) -> str:
    """Explain the embedded driver's opaque failure when its root path is too long."""
    root = embed_root(uri)
    if root is None:
        return ""
    sock = root / "lib" / "qemu" / f"domain-1-{name[:20]}" / "monitor.sock"
    if len(str(sock)) < SUN_PATH_MAX:
        return ""
    return (
        f" (the embedded driver's monitor socket {sock} exceeds the {SUN_PATH_MAX - 1}"
        " byte limit of UNIX socket paths: use a shorter state_dir)"
    )


def is_local(uri: str) -> bool:
    """True when the URI's hypervisor runs on this host (its pids, ptys and files are ours)."""
    parts = urlsplit(uri)
    return not parts.hostname and parts.scheme.partition("+")[2] in ("", "unix")


def remote_host(uri: str) -> str | None:
    """Host name of a remote URI (where the guests' hostfwd ports listen), else None."""
    return None if is_local(uri) else urlsplit(uri).hostname


def check_embed_users() -> None:
    """Raise BackendError unless the ``libvirt-qemu`` user and group exist (when root).

    A privileged embedded driver resolves its compiled-in default user before
    it reads qemu.conf, so the user must exist even though guests run as root.
    """
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(LIBVIRT_QEMU_USER)
        grp.getgrnam(LIBVIRT_QEMU_USER)
    except KeyError as exc:
        raise BackendError(
            f"the embedded libvirt driver needs the {LIBVIRT_QEMU_USER!r} user and group "
            "(install libvirt-daemon-system, or: groupadd --system libvirt-qemu && useradd "
            "--system -g libvirt-qemu -M -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu)"
        ) from exc


def write_qemu_conf(root: Path) -> Path:
    """Write the embedded driver's ``<root>/etc/qemu.conf`` unless the user manages it."""
    path = root / "etc" / "qemu.conf"
    text = QEMU_CONF_HEADER + (QEMU_CONF_ROOT if os.geteuid() == 0 else "") + QEMU_CONF
    try:
        if path.exists() and not path.read_text().startswith(QEMU_CONF_HEADER):
            log.info("keeping user-managed %s", path)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        raise BackendError(f"cannot write {path}: {exc}") from exc
    return path


@dataclass(frozen=True)
class DomainSpec:
    """Everything the domain XML of one guest depends on (built from a MachineProfile)."""

    name: str
    domain_type: str  # "qemu" (TCG) or "kvm"
    emulator: str  # qemu-system-ARCH; rendered as <emulator> when an absolute path
    machine: str | None
    memory_mib: int
    smp: int
    kernel: Path
    cmdline: str
    console_log: Path | None  # None: no QEMU-side log (remote host: farm streams it)
    host_port: int
    agent_port: int
    nic_model: str
    owner_pid: int
    owner_start: float
    owner_host: str
    state_dir: Path
    initrd: Path | None = None
    cpu: str | None = None
    extra_args: tuple[str, ...] = ()
    hostfwd_addr: str = "127.0.0.1"
    serial: bool = True  # a serial console (pty) at all
    bridge: str | None = None  # on this bridge (libvirt's own tap) instead of user-mode net
    mac: str | None = None  # the NIC's MAC on the bridge (the machine's reservation)
    identity_socket: Path | None = None  # virtio port farm.identity (the guest's key) here
    title: str | None = None  # virsh list --title: which farm owns the domain
    identity_channel: bool = False  # that port with a path libvirt picks (farm opens a stream)
    virtio_mmio: bool = False  # x86 microvm: no PCI, no ACPI (MachineProfile.virtio_mmio)

    @property
    def arch(self) -> str:
        """libvirt architecture name of the guest (from the emulator's name)."""
        return self.arch_of(self.emulator)

    @staticmethod
    def arch_of(emulator: str) -> str:
        """libvirt architecture name derived from a binary named qemu-system-ARCH."""
        suffix = Path(emulator).name.removeprefix("qemu-system-")
        return _ARCHES.get(suffix, suffix)


@dataclass(frozen=True)
class FarmMarker:
    """farm's metadata on a domain: which farm process started it, on which host, for what."""

    owner_pid: int
    owner_start: float
    owner_host: str
    state_dir: str


def network_args(
    nic_model: str, host_port: int, agent_port: int, addr: str = "127.0.0.1"
) -> list[str]:
    """QEMU arguments for user-mode networking forwarding addr:host_port to the agent.

    No NIC model (``""``) means no network at all, as in the profile.
    """
    if not nic_model:
        return []
    fwd = f"hostfwd=tcp:{addr}:{host_port}-:{agent_port}"
    if nic_model in PCI_NICS or nic_model.endswith("-pci"):
        device = f"{nic_model},netdev={NETDEV_ID},addr={NIC_PCI_ADDR}"
    elif nic_model.endswith("-device"):  # virtio-mmio: a plain device, no PCI address
        device = f"{nic_model},netdev={NETDEV_ID}"
    else:  # a board's own NIC (e.g. lan9118 on realview): only -nic wires it
        return ["-nic", f"user,id={NETDEV_ID},model={nic_model},{fwd}"]
    return ["-netdev", f"user,id={NETDEV_ID},{fwd}", "-device", device]


def libvirt_nic_model(nic_model: str) -> str:
    """libvirt's ``<model type=...>`` for a QEMU NIC device (``virtio-net-pci`` -> ``virtio``).

    Board NICs (``-nic model=...`` only) cannot be a libvirt ``<interface>``.
    """
    if nic_model.startswith("virtio-net"):
        return "virtio"
    if nic_model in PCI_NICS or nic_model.endswith("-pci"):
        return nic_model
    raise ConfigError(
        f"NIC model {nic_model!r} is a board NIC: libvirt cannot put it on a bridge "
        "(use a PCI/virtio NIC, or backend = 'qemu')"
    )


def bridge_interface(bridge: str, mac: str, nic_model: str) -> ET.Element:
    """``<interface type='bridge'>`` on ``bridge`` with ``mac``; libvirt manages the tap."""
    iface = ET.Element("interface", {"type": "bridge"})
    ET.SubElement(iface, "source", {"bridge": bridge})
    ET.SubElement(iface, "mac", {"address": mac})
    ET.SubElement(iface, "model", {"type": libvirt_nic_model(nic_model)})
    return iface


def domain_xml(spec: DomainSpec) -> str:
    """Render the transient domain of ``spec`` as a libvirt domain XML string."""
    ET.register_namespace("qemu", QEMU_NS)
    ET.register_namespace("farm", FARM_NS)
    x86 = spec.arch in ("x86_64", "i686")
    root = ET.Element("domain", {"type": spec.domain_type})
    _text(root, "name", spec.name)
    if spec.title:
        _text(root, "title", spec.title)
    _text(root, "memory", str(spec.memory_mib), unit="MiB")
    _text(root, "vcpu", str(spec.smp))
    marker = {
        "owner-pid": str(spec.owner_pid),
        "owner-start": repr(spec.owner_start),
        "owner-host": spec.owner_host,
        "state-dir": str(spec.state_dir),
    }
    ET.SubElement(ET.SubElement(root, "metadata"), f"{{{FARM_NS}}}guest", marker)
    os_el = ET.SubElement(root, "os")
    machine = {"machine": spec.machine} if spec.machine else {}
    _text(os_el, "type", "hvm", arch=spec.arch, **machine)
    _text(os_el, "kernel", str(spec.kernel))
    if spec.initrd is not None:
        _text(os_el, "initrd", str(spec.initrd))
    _text(os_el, "cmdline", spec.cmdline)
    if x86 and not spec.virtio_mmio:  # microvm: no ACPI, its devices on the kernel command line
        ET.SubElement(ET.SubElement(root, "features"), "acpi")
    extra = list(spec.extra_args)
    cpu = _cpu_element(spec)
    if cpu is not None:
        root.append(cpu)
    elif spec.cpu:  # a CPU with features ("qemu64,+x2apic"): passed through as given
        extra = ["-cpu", spec.cpu, *extra]
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        _text(root, event, "destroy")  # a guest that stops is gone (libvirt adds -no-reboot)
    devices = ET.SubElement(root, "devices")
    if Path(spec.emulator).is_absolute():
        _text(devices, "emulator", spec.emulator)
    if spec.serial:
        serial = ET.SubElement(devices, "serial", {"type": "pty"})
        ET.SubElement(serial, "target", {"port": "0"})
        if spec.console_log is not None:
            ET.SubElement(serial, "log", {"file": str(spec.console_log), "append": "off"})
        console = ET.SubElement(devices, "console", {"type": "pty"})
        ET.SubElement(console, "target", {"type": "serial", "port": "0"})
    if spec.identity_socket is not None or spec.identity_channel:  # QEMU listens
        chan = ET.SubElement(devices, "channel", {"type": "unix"})
        path = {"path": str(spec.identity_socket)} if spec.identity_socket else {}
        ET.SubElement(chan, "source", {"mode": "bind", **path})
        ET.SubElement(chan, "target", {"type": "virtio", "name": "farm.identity"})
        if spec.virtio_mmio:  # else libvirt would put the port's controller on PCI
            ctl = ET.SubElement(devices, "controller", {"type": "virtio-serial", "index": "0"})
            ET.SubElement(ctl, "address", {"type": "virtio-mmio"})
    if x86:
        ET.SubElement(devices, "controller", {"type": "usb", "model": "none"})
    net: list[str] = []
    if spec.bridge is not None:
        if spec.nic_model:  # no NIC model: no network at all, as in the profile
            if not spec.mac:
                raise ConfigError(f"{spec.name}: a NIC on bridge {spec.bridge} needs a MAC")
            iface = bridge_interface(spec.bridge, spec.mac, spec.nic_model)
            if spec.virtio_mmio:
                ET.SubElement(iface, "address", {"type": "virtio-mmio"})
            devices.append(iface)
    else:
        net = network_args(spec.nic_model, spec.host_port, spec.agent_port, spec.hostfwd_addr)
    ET.SubElement(devices, "memballoon", {"model": "none"})
    cmd = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    for arg in [*net, *extra]:
        ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", {"value": arg})
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def _cpu_element(spec: DomainSpec) -> ET.Element | None:
    """``<cpu>`` for a plain model name; None for libvirt's default or a pass-through string."""
    model = spec.cpu
    if not model or "," in model:
        return None
    if model == "host":
        if spec.domain_type == "kvm":
            return ET.Element("cpu", {"mode": "host-passthrough", "check": "none"})
        model = "max"  # TCG cannot pass the host CPU through; "max" is its nearest
    if model == "max":
        return ET.Element("cpu", {"mode": "maximum", "check": "none"})
    cpu = ET.Element("cpu", {"mode": "custom", "match": "exact", "check": "none"})
    _text(cpu, "model", model, fallback="forbid")
    return cpu


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    el.text = text
    return el


def parse_marker(xml: str) -> FarmMarker | None:
    """farm's marker in a domain XML, or None when the domain is not farm's."""
    try:
        el = ET.fromstring(xml).find(f"metadata/{{{FARM_NS}}}guest")
        if el is None:
            return None
        return FarmMarker(
            owner_pid=int(el.get("owner-pid", "")),
            owner_start=float(el.get("owner-start", "0")),
            owner_host=el.get("owner-host", ""),
            state_dir=el.get("state-dir", ""),
        )
    except (ET.ParseError, ValueError):
        return None


def offers_kvm(capabilities: str, arch: str) -> bool:
    """True when a host's libvirt capabilities XML offers KVM domains for ``arch``."""
    try:
        root = ET.fromstring(capabilities)
    except ET.ParseError:
        return False
    return any(
        guest.find(f"arch[@name='{arch}']/domain[@type='kvm']") is not None
        for guest in root.iterfind("guest")
    )


def serial_pty(xml: str) -> str | None:
    """Host pty path of the domain's first serial port (live XML), when it has one."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for serial in root.iterfind("devices/serial[@type='pty']"):
        source = serial.find("source")
        if source is not None and source.get("path"):
            return source.get("path")
    return None
