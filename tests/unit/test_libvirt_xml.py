"""Domain XML of the libvirt backend: well-formed, marked as farm's, networked, logged."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from farm.backend.libvirt_xml import (
    FARM_NS,
    QEMU_NS,
    DomainSpec,
    FarmMarker,
    bridge_interface,
    domain_xml,
    libvirt_nic_model,
    network_args,
    parse_marker,
    serial_pty,
)
from farm.errors import ConfigError

SPEC = DomainSpec(
    name="qemu1",
    domain_type="qemu",
    emulator="/usr/bin/qemu-system-x86_64",
    machine="q35",
    memory_mib=256,
    smp=2,
    kernel=Path("/img/image.elf"),
    initrd=Path("/img/initrd.img"),
    cmdline="console=ttyS0 quiet farm.token=tok farm.port=3001",
    console_log=Path("/farm/log/qemu1.console.log"),
    host_port=40123,
    agent_port=3001,
    nic_model="virtio-net-pci",
    owner_pid=4242,
    owner_start=1700000000.25,
    owner_host="farmhost",
    state_dir=Path("/farm/.farm"),
)


def qemu_args(root: ET.Element) -> list[str]:
    return [a.get("value", "") for a in root.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]


def test_well_formed_with_basics() -> None:
    root = ET.fromstring(domain_xml(SPEC))
    assert root.tag == "domain"
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "qemu1"
    memory = root.find("memory")
    assert memory is not None and memory.text == "256" and memory.get("unit") == "MiB"
    assert root.findtext("vcpu") == "2"
    os_type = root.find("os/type")
    assert (
        os_type is not None and os_type.get("arch") == "x86_64" and os_type.get("machine") == "q35"
    )
    assert root.findtext("os/kernel") == "/img/image.elf"
    assert root.findtext("os/initrd") == "/img/initrd.img"
    assert root.findtext("os/cmdline") == SPEC.cmdline
    assert root.findtext("devices/emulator") == SPEC.emulator
    assert root.find("devices/disk") is None
    assert [root.findtext(e) for e in ("on_poweroff", "on_reboot", "on_crash")] == ["destroy"] * 3


def test_kvm_domain_type() -> None:
    root = ET.fromstring(domain_xml(dataclasses.replace(SPEC, domain_type="kvm", cpu="host")))
    assert root.get("type") == "kvm"
    cpu = root.find("cpu")
    assert cpu is not None and cpu.get("mode") == "host-passthrough"


def test_metadata_marker_round_trip() -> None:
    text = domain_xml(SPEC)
    root = ET.fromstring(text)
    assert root.find(f"metadata/{{{FARM_NS}}}guest") is not None
    assert parse_marker(text) == FarmMarker(4242, 1700000000.25, "farmhost", "/farm/.farm")


def test_no_marker_on_foreign_or_bad_xml() -> None:
    assert parse_marker("<domain type='qemu'><name>x</name></domain>") is None
    other = "<domain><metadata><o:guest xmlns:o='urn:other' owner-pid='1'/></metadata></domain>"
    assert parse_marker(other) is None
    assert parse_marker("<domain") is None
    bad_pid = f"<domain><metadata><f:guest xmlns:f='{FARM_NS}' owner-pid='x'/></metadata></domain>"
    assert parse_marker(bad_pid) is None


def test_user_net_hostfwd_on_own_pci_address() -> None:
    args = qemu_args(ET.fromstring(domain_xml(SPEC)))
    assert args[:4] == [
        "-netdev",
        "user,id=farmnet,hostfwd=tcp:127.0.0.1:40123-:3001",
        "-device",
        "virtio-net-pci,netdev=farmnet,addr=0x10",
    ]


def test_console_is_a_logged_pty() -> None:
    root = ET.fromstring(domain_xml(SPEC))
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "pty"
    logfile = serial.find("log")
    assert logfile is not None
    assert logfile.get("file") == "/farm/log/qemu1.console.log"
    assert logfile.get("append") == "off"
    console = root.find("devices/console/target")
    assert console is not None and console.get("type") == "serial"


def test_extra_args_and_cpu_with_features_pass_through() -> None:
    spec = dataclasses.replace(SPEC, cpu="qemu64,+x2apic", extra_args=("-rtc", "base=utc"))
    root = ET.fromstring(domain_xml(spec))
    assert root.find("cpu") is None
    assert qemu_args(root)[4:] == ["-cpu", "qemu64,+x2apic", "-rtc", "base=utc"]


@pytest.mark.parametrize(
    ("cpu", "mode", "model"),
    [
        ("max", "maximum", None),
        ("host", "maximum", None),
        ("Skylake-Client", "custom", "Skylake-Client"),
    ],
)
def test_cpu_models_under_tcg(cpu: str, mode: str, model: str | None) -> None:
    el = ET.fromstring(domain_xml(dataclasses.replace(SPEC, cpu=cpu))).find("cpu")
    assert el is not None and el.get("mode") == mode
    assert el.findtext("model") == model


def test_board_nic_uses_nic_option() -> None:
    assert network_args("lan9118", 5000, 3001) == [
        "-nic",
        "user,id=farmnet,model=lan9118,hostfwd=tcp:127.0.0.1:5000-:3001",
    ]
    assert network_args("virtio-net-device", 5000, 3001)[-1] == "virtio-net-device,netdev=farmnet"
    assert network_args("e1000", 5000, 3001)[-1] == "e1000,netdev=farmnet,addr=0x10"


def test_arm_guest_has_no_x86_bits() -> None:
    spec = dataclasses.replace(
        SPEC, emulator="/usr/bin/qemu-system-arm", machine="realview-pbx-a9", nic_model="lan9118"
    )
    root = ET.fromstring(domain_xml(spec))
    os_type = root.find("os/type")
    assert os_type is not None and os_type.get("arch") == "armv7l"
    assert root.find("features") is None
    assert root.find("devices/controller") is None


def test_remote_guest_listens_on_all_addresses_without_qemu_log() -> None:
    spec = dataclasses.replace(
        SPEC, hostfwd_addr="0.0.0.0", console_log=None, emulator="qemu-system-x86_64"
    )
    root = ET.fromstring(domain_xml(spec))
    assert "user,id=farmnet,hostfwd=tcp:0.0.0.0:40123-:3001" in qemu_args(root)
    serial = root.find("devices/serial")
    assert serial is not None and serial.find("log") is None
    assert root.find("devices/emulator") is None  # the remote host picks its own binary


def test_no_initrd() -> None:
    root = ET.fromstring(domain_xml(dataclasses.replace(SPEC, initrd=None)))
    assert root.find("os/initrd") is None


def test_serial_pty_from_live_xml() -> None:
    live = """<domain><devices>
      <serial type='pty'><source path='/dev/pts/7'/><target port='0'/></serial>
      <console type='pty' tty='/dev/pts/7'><source path='/dev/pts/7'/></console>
    </devices></domain>"""
    assert serial_pty(live) == "/dev/pts/7"
    assert serial_pty(domain_xml(SPEC)) is None  # not started yet: no pty
    assert serial_pty("not xml") is None


def test_special_characters_are_escaped() -> None:
    spec = dataclasses.replace(SPEC, cmdline="console=ttyS0 a=<b>&c", console_log=Path("/l o&g"))
    root = ET.fromstring(domain_xml(spec))
    assert root.findtext("os/cmdline") == "console=ttyS0 a=<b>&c"


BRIDGED = dataclasses.replace(SPEC, bridge="br0", mac="52:54:00:fa:00:01", host_port=0)


def test_bridged_nic_is_a_libvirt_bridge_interface() -> None:
    root = ET.fromstring(domain_xml(BRIDGED))
    ifaces = root.findall("devices/interface")
    assert len(ifaces) == 1
    iface = ifaces[0]
    assert iface.get("type") == "bridge"
    source, mac, model = iface.find("source"), iface.find("mac"), iface.find("model")
    assert source is not None and source.attrib == {"bridge": "br0"}
    assert mac is not None and mac.attrib == {"address": "52:54:00:fa:00:01"}
    assert model is not None and model.attrib == {"type": "virtio"}
    assert iface.find("target") is None  # libvirt names, creates and removes the tap itself


def test_bridged_domain_has_no_user_mode_network() -> None:
    root = ET.fromstring(domain_xml(BRIDGED))
    args = qemu_args(root)
    assert not any("user," in a or "hostfwd" in a or "netdev" in a for a in args), args
    spec = dataclasses.replace(BRIDGED, extra_args=("-rtc", "base=utc"))
    assert qemu_args(ET.fromstring(domain_xml(spec))) == ["-rtc", "base=utc"]
    # and a user-mode domain has no <interface>
    assert ET.fromstring(domain_xml(SPEC)).find("devices/interface") is None


def test_bridged_nic_models() -> None:
    assert libvirt_nic_model("virtio-net-pci") == "virtio"
    assert libvirt_nic_model("virtio-net-device") == "virtio"
    assert libvirt_nic_model("e1000") == "e1000"
    assert libvirt_nic_model("rtl8139") == "rtl8139"
    with pytest.raises(ConfigError, match="board NIC"):
        libvirt_nic_model("lan9118")
    model = bridge_interface("br9", "52:54:00:fa:01:ff", "e1000").find("model")
    assert model is not None and model.get("type") == "e1000"


def test_bridged_without_nic_model_has_no_network_and_mac_is_required() -> None:
    root = ET.fromstring(domain_xml(dataclasses.replace(BRIDGED, nic_model="")))
    assert root.find("devices/interface") is None
    assert qemu_args(root) == []
    with pytest.raises(ConfigError, match="needs a MAC"):
        domain_xml(dataclasses.replace(BRIDGED, mac=None))
