"""Warm start on the bridge and with shared memory: the identity's net entry, RAM arguments."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from pathlib import Path

import pytest

from farm.backend import identity_port, snapshot, snapshot_mem
from farm.backend.qemu import QemuBackend
from farm.backend.snapshot_net import TEMPLATE_MAC, WarmNet
from farm.bridge.bridge import TapNic
from farm.bridge.dhcp import DhcpPlan, mac_for
from farm.config import FarmConfig
from farm.errors import ConfigError, LaunchError
from farm.profile import MachineProfile
from farm.qemu import QemuProcess


def _net() -> WarmNet:
    return WarmNet(DhcpPlan.create("10.77.0.0/24"), "virtio-net-pci")


def test_identity_carries_the_guests_own_mac_ip_and_gateway() -> None:
    net = _net()
    nic = TapNic("farm-tap3", mac_for(3), net.plan.ip_for(3))
    assert net.identity(nic) == {
        "mac": "52:54:00:fa:00:03",
        "ip": "10.77.0.13/24",
        "gw": "10.77.0.1",
    }


def test_template_address_is_no_guests_and_its_mac_no_machines() -> None:
    net = _net()
    reserved = {ip for _, _, ip in net.plan.reservations()}
    assert net.template_address == ipaddress.IPv4Interface("10.77.0.10/24")
    assert net.template_address.ip not in reserved and net.template_address.ip != net.plan.bridge_ip
    assert TEMPLATE_MAC not in {mac for _, mac, _ in net.plan.reservations()}


def test_profile_takes_the_nic_from_arguments_and_a_static_template_address() -> None:
    profile = _net().profile(MachineProfile())
    assert profile.nic == ""
    assert "farm.ip=10.77.0.10/24,10.77.0.1" in profile.kernel_args.split()


def test_key_depends_on_the_network() -> None:
    a, b = _net(), WarmNet(DhcpPlan.create("10.78.0.0/24"), "virtio-net-pci")
    assert a.key() != b.key() and a.key() == _net().key()
    assert json.dumps(a.key())  # part of the snapshot key document


def test_template_nic_needs_the_bridge() -> None:
    with pytest.raises(ValueError, match="bridge"), _net().template_nic():
        pass


def test_nic_args_use_the_profiles_model_and_the_guests_mac() -> None:
    nic = TapNic("farm-tap2", mac_for(2), ipaddress.IPv4Address("10.77.0.12"))
    args = WarmNet(DhcpPlan.create("10.77.0.0/24"), "e1000").nic_args(nic)
    assert args[-1] == "e1000,netdev=net0,mac=52:54:00:fa:00:02"


def test_identity_line_holds_the_net_entry() -> None:
    """send_identity writes one JSON line with ``net`` and waits for ``ok NAME``."""
    host, guest = socket.socketpair()
    with host, guest:
        guest.sendall(b"farm-identity: ok qemu4\n")
        net = {"mac": mac_for(4), "ip": "10.77.0.14/24", "gw": "10.77.0.1"}
        identity_port.send_identity(host, "qemu4", "k" * 64, lambda: True, 5.0, net)
        line = json.loads(guest.recv(65536).split(b"\n")[0])
    assert line["net"] == net and line["name"] == "qemu4" and line["token"] == "k" * 64


def test_bridge_refused_only_where_nobody_hands_out_macs() -> None:
    profile = MachineProfile()
    with pytest.raises(ConfigError, match="MAC"):
        snapshot.check_profile(profile, "bridge")
    snapshot.check_profile(profile, "bridge", bridged=True)


def test_ram_args_share_the_template_and_keep_restored_guests_private(tmp_path: Path) -> None:
    ram = snapshot_mem.ram_path(tmp_path / "k.bin")
    assert ram.name == "k.ram" and snapshot_mem.part_path(ram).name == "k.ram.part"
    template = snapshot_mem.ram_args(ram, 256, shared=True)
    restored = snapshot_mem.ram_args(ram, 256, shared=False)
    assert template[1].endswith("share=on") and restored[1].endswith("share=off")
    assert f"mem-path={ram}" in restored[1] and "size=256M" in restored[1]
    assert restored[2:] == ["-machine", f"memory-backend={snapshot_mem.RAM_ID}"]


def test_capabilities_ignore_shared_ram_only_with_a_ram_file(tmp_path: Path) -> None:
    names = [c["capability"] for c in snapshot_mem.capabilities(tmp_path / "k.ram")]
    assert names == ["events", "x-ignore-shared"]
    assert [c["capability"] for c in snapshot_mem.capabilities(None)] == ["events"]


def test_ram_file_checked_by_size_and_sha256(tmp_path: Path) -> None:
    ram = tmp_path / "k.ram"
    ram.write_bytes(b"\0" * 4096)
    meta = snapshot_mem.describe(ram)
    assert snapshot_mem.intact(ram, meta)
    ram.write_bytes(b"\1" + b"\0" * 4095)
    assert not snapshot_mem.intact(ram, meta)
    snapshot_mem.discard(ram)
    assert not ram.exists() and not snapshot_mem.intact(ram, meta)
    snapshot_mem.discard(None)


def test_no_thp_turns_transparent_huge_pages_off_for_children_only() -> None:
    """Restored guests' QEMUs start with THP off; farm's own flag comes back afterwards."""

    def child_thp() -> str:
        out = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True).stdout
        return next(line.split()[1] for line in out.splitlines() if line.startswith("THP_enabled"))

    before = child_thp()
    with snapshot_mem.no_thp(), snapshot_mem.no_thp():  # nested: the outer block keeps it off
        assert child_thp() == "0"
    assert child_thp() == before


def test_restored_guests_launch_with_thp_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QemuBackend starts a restored guest's QEMU inside no_thp(), a cold one outside."""
    seen: list[str] = []

    def launch(self: QemuProcess) -> QemuProcess:
        status = Path("/proc/self/status").read_text()
        seen.append(next(ln.split()[1] for ln in status.splitlines() if "THP_enabled" in ln))
        raise LaunchError("not started")

    monkeypatch.setattr(QemuProcess, "launch", launch)
    config = FarmConfig(backend="qemu", state_dir=tmp_path, log_dir=tmp_path, warm_start=False)
    backend = QemuBackend(config, MachineProfile(accel="tcg"))
    snap = snapshot.Snapshot(tmp_path / "k.bin", "k", 0, "", ram=tmp_path / "k.ram")
    for warm in (snap, None):
        with pytest.raises(LaunchError):
            backend._spawn("qemu1", "tok", warm=warm)
    assert seen[0] == "0" and seen[1] != "0"


def test_tb_size_goes_on_the_tcg_accelerator_only() -> None:
    argv = MachineProfile(accel="tcg", tb_size=16).qemu_argv("g", hostfwd_port=None, token="t")
    assert argv[argv.index("-accel") + 1] == "tcg,tb-size=16"
    argv = MachineProfile(accel="tcg").qemu_argv("g", hostfwd_port=None, token="t")
    assert argv[argv.index("-accel") + 1] == "tcg"
    with pytest.raises(ConfigError, match="tb_size"):
        MachineProfile(tb_size=-1)


def test_snapshot_key_depends_on_ram_sharing_and_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RAM-file template and a bridged template are other snapshots than the plain one."""
    monkeypatch.setattr(snapshot, "qemu_version", lambda qemu: "QEMU emulator version 7.2.0")
    (tmp_path / "image.elf").write_bytes(b"k")
    (tmp_path / "initrd.img").write_bytes(b"i")
    profile = MachineProfile(accel="tcg").with_images(tmp_path)
    keys = {
        snapshot.snapshot_key(profile),
        snapshot.snapshot_key(profile, ram=True),
        snapshot.snapshot_key(profile, _net(), ram=True),
        snapshot.snapshot_key(profile, WarmNet(DhcpPlan.create("10.78.0.0/24")), ram=True),
    }
    assert len(keys) == 4
    assert snapshot.snapshot_key(profile, _net(), ram=True) in keys  # stable
