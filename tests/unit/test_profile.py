"""MachineProfile: validation, plain-data round trip, QEMU argv and kernel command line."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from farm.errors import ConfigError
from farm.profile import MachineProfile, default_profile, load_profile

GENODE = {
    "name": "genode-pbxa9",
    "qemu": "qemu-system-arm",
    "machine": "realview-pbx-a9",
    "cpu": "",
    "memory": 768,
    "nic": "lan9118",
    "nic_onboard": True,
    "kernel": "genode/image.elf",
    "initrd": "",
    "kernel_args": "",
    "farm_cmdline": False,
    "accel": "tcg",
    "session": "genode",
}


def test_default_profile_boots_farm_image() -> None:
    p = default_profile(Path("/img"))
    assert p.kernel == Path("/img/image.elf") and p.initrd == Path("/img/initrd.img")
    assert "console=ttyS0" in p.kernel_args and p.accel == "auto"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("memory", 0),
        ("memory", "256"),
        ("smp", 0),
        ("smp", True),
        ("accel", "hvf"),
        ("guest_port", 70000),
        ("qemu", ""),
        ("session", "ssh"),
        ("extra_args", [1, 2]),
        ("kernel", 5),
        ("farm_cmdline", "yes"),
    ],
)
def test_from_dict_names_the_bad_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        MachineProfile.from_dict({key: value})


def test_from_dict_rejects_unknown_keys_and_non_tables() -> None:
    with pytest.raises(ConfigError, match="memroy"):
        MachineProfile.from_dict({"memroy": 512})
    with pytest.raises(ConfigError):
        MachineProfile.from_dict(["memory", 512])  # type: ignore[arg-type]


def test_round_trip_and_string_forms() -> None:
    p = MachineProfile.from_dict({"extra_args": "-rtc base=utc", "initrd": "", "memory": 512})
    assert p.extra_args == ("-rtc", "base=utc") and p.initrd is None and p.memory == 512
    assert MachineProfile.from_dict(p.to_dict()) == p


def test_load_profile_applies_overrides_to_the_default() -> None:
    assert load_profile() == default_profile(Path("images").resolve())
    p = load_profile({"memory": 512, "machine": "q35"})
    assert (
        p.memory == 512
        and p.machine == "q35"
        and p.kernel == default_profile(Path("images").resolve()).kernel
    )
    with pytest.raises(ConfigError, match="smp"):
        load_profile({"smp": -1})


def test_argv_for_user_networking_with_hostfwd(tmp_path: Path) -> None:
    p = default_profile(Path("/img"))
    argv = p.qemu_argv(
        "qemu1",
        hostfwd_port=40001,
        token="s3cret",
        console=tmp_path / "c.log",
        qmp_socket=tmp_path / "q.sock",
        accel="tcg",
    )
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-machine") + 1] == "microvm,acpi=off"  # devices on the cmdline
    assert "-bios" not in argv  # microvm's own firmware
    joined = " ".join(argv)
    for part in ("-nodefaults", "-no-user-config", "-no-reboot", "-display none", "-accel tcg"):
        assert part in joined
    netdev = "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:40001-:3001"
    assert argv[argv.index("-netdev") + 1] == netdev
    assert argv[argv.index("-device") + 1] == "virtio-net-device,netdev=net0,guest_announce=off"
    assert argv[argv.index("-chardev") + 1] == f"file,id=console,path={tmp_path / 'c.log'}"
    assert argv[argv.index("-serial") + 1] == "chardev:console"
    assert argv[argv.index("-qmp") + 1] == f"unix:{tmp_path / 'q.sock'},server=on,wait=off"
    append = argv[argv.index("-append") + 1]
    assert append.endswith("farm.token=s3cret") and "farm.port" not in append
    assert argv[argv.index("-kernel") + 1] == "/img/image.elf"


def test_argv_other_guest_port_console_log_and_extra(tmp_path: Path) -> None:
    p = MachineProfile(extra_args=("-rtc", "base=utc"))
    argv = p.qemu_argv(
        "q",
        hostfwd_port=5,
        token="t",
        guest_port=4000,
        console="stdio",
        console_log=tmp_path / "a,b.log",
        accel="tcg",
        extra=["-S"],
    )
    assert "hostfwd=tcp:127.0.0.1:5-:4000" in argv[argv.index("-netdev") + 1]
    assert argv[argv.index("-append") + 1].endswith("farm.token=t farm.port=4000")
    chardev = argv[argv.index("-chardev") + 1]
    assert chardev == f"stdio,id=console,logfile={tmp_path}/a,,b.log,logappend=off"
    assert argv[-3:] == ["-rtc", "base=utc", "-S"]


def test_network_less_variant_has_no_nic() -> None:
    argv = (
        default_profile().without_network().qemu_argv("q", hostfwd_port=1, token="t", accel="tcg")
    )
    assert "-nic" not in argv and "-netdev" not in argv


def test_genode_profile_example() -> None:
    p = MachineProfile.from_dict(GENODE)
    argv = p.qemu_argv("genode1", hostfwd_port=4444, token="ignored", accel=None)
    assert argv[:5] == ["qemu-system-arm", "-name", "genode1", "-machine", "realview-pbx-a9"]
    assert "-cpu" not in argv and "-initrd" not in argv and "-append" not in argv
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert "model=lan9118" in argv[argv.index("-nic") + 1]
    assert p.session == "genode"


def test_token_must_be_one_word() -> None:
    with pytest.raises(ConfigError):
        default_profile().kernel_cmdline("two words")
    assert "farm.token" not in default_profile().kernel_cmdline(None)


def test_farm_image_on_a_pc_board_boots_through_qboot() -> None:
    p = replace(default_profile(Path("/img")), machine="q35")
    assert p.bios == "auto" and p.resolved_bios() == "qboot.rom"
    argv = p.qemu_argv("q", hostfwd_port=1, token="t", accel="tcg")
    assert argv[argv.index("-bios") + 1] == "qboot.rom"
    for machine in ("pc", "pc-i440fx-7.2", "q35,smm=off"):
        assert replace(p, machine=machine).resolved_bios() == "qboot.rom"


def test_farm_image_on_a_pc_board_leaves_out_the_unused_devices() -> None:
    """No SATA, SMBus or vmport on the board and no NIC ROM: state every QEMU would keep."""
    p = replace(default_profile(Path("/img")), machine="q35")
    assert p.lean_board and p.lean()
    argv = p.qemu_argv("q", hostfwd_port=1, token="t", accel="tcg")
    machines = [b for a, b in itertools.pairwise(argv) if a == "-machine"]
    assert machines == ["q35", "sata=off,smbus=off,vmport=off"]
    assert argv[argv.index("-device") + 1].endswith(",romfile=,guest_announce=off")
    for machine in ("pc", "pc-i440fx-7.2"):
        assert replace(p, machine=machine).lean()
    full = replace(p, lean_board=False)
    argv = full.qemu_argv("q", hostfwd_port=1, token="t", accel="tcg")
    assert argv.count("-machine") == 1 and "romfile=" not in " ".join(argv)
    assert "ipv6=off" not in " ".join(argv) and "guest_announce" not in " ".join(argv)
    assert MachineProfile.from_dict(full.to_dict()) == full
    with pytest.raises(ConfigError, match="lean_board"):
        MachineProfile.from_dict({"lean_board": "yes"})


def test_farm_image_on_the_user_network_has_no_ipv6_and_no_guest_announce() -> None:
    """Kernel work a restored guest would do (and QEMU translate) for nothing (issue 18)."""
    p = replace(default_profile(Path("/img")), machine="q35")
    argv = p.qemu_argv("q", hostfwd_port=1, token="t", accel="tcg")
    assert argv[argv.index("-netdev") + 1].startswith("user,id=net0,ipv6=off,")
    assert argv[argv.index("-device") + 1].endswith(",guest_announce=off")
    e1000 = replace(p, nic="e1000").qemu_argv("q", hostfwd_port=1, token="t", accel="tcg")
    assert e1000[e1000.index("-device") + 1] == "e1000,netdev=net0,romfile="  # virtio-net only
    onboard = replace(p, nic_onboard=True).qemu_argv("q", hostfwd_port=1, token="t", accel="tcg")
    assert onboard[onboard.index("-nic") + 1].startswith("user,id=net0,ipv6=off,")


def test_other_boards_and_images_keep_all_their_devices() -> None:
    genode = MachineProfile.from_dict(GENODE)
    assert not genode.lean() and not MachineProfile(farm_cmdline=False).lean()
    argv = genode.qemu_argv("g", hostfwd_port=1, token=None, accel=None)
    assert argv.count("-machine") == 1 and "romfile=" not in " ".join(argv)
    assert "ipv6=off" not in " ".join(argv)
    assert not MachineProfile(machine="microvm").lean()  # no SATA/SMBus to leave out


def test_microvm_board_puts_virtio_on_mmio() -> None:
    """farm's default board: no PCI; a virtio NIC named for PCI follows the board (issue 18)."""
    p = default_profile(Path("/img"))
    assert p.board == "microvm" and p.virtio_mmio() and p.lean_net()
    assert p.virtio_device("serial") == "virtio-serial-device"
    assert p.nic_device == "virtio-net-device" and p.nic == "virtio-net-pci"
    assert replace(p, nic="virtio-net-device").nic_device == "virtio-net-device"
    assert replace(p, nic="e1000").nic_device == "e1000"  # not virtio: as given
    q35 = replace(p, machine="q35,smm=off")
    assert q35.board == "q35" and not q35.virtio_mmio()
    assert replace(q35, nic="virtio-net-device").nic_device == "virtio-net-pci"
    assert q35.virtio_device("serial") == "virtio-serial-pci" and q35.machine_opts() == q35.machine
    assert replace(p, machine="microvm,acpi=on").machine_opts() == "microvm,acpi=on"  # as set
    genode = MachineProfile.from_dict(GENODE)  # ARM boards: virtio-*-device stays as given
    assert replace(genode, nic="virtio-net-device").nic_device == "virtio-net-device"
    assert genode.machine_opts() == "realview-pbx-a9" and not genode.virtio_mmio()
    other = MachineProfile(machine="microvm", farm_cmdline=False)  # not farm's kernel: as set
    assert other.machine_opts() == "microvm"


def test_other_boards_and_images_keep_their_firmware() -> None:
    genode = MachineProfile.from_dict(GENODE)
    assert genode.resolved_bios() == ""
    assert "-bios" not in genode.qemu_argv("g", hostfwd_port=1, token=None, accel=None)
    assert MachineProfile(machine="microvm").resolved_bios() == ""
    assert MachineProfile(farm_cmdline=False).resolved_bios() == ""  # not farm's Linux image
    board_default = MachineProfile.from_dict({"bios": ""})
    assert "-bios" not in board_default.qemu_argv("q", hostfwd_port=1, token="t", accel="tcg")
    own = MachineProfile.from_dict({"bios": "/fw/bios-256k.bin"})
    argv = own.qemu_argv("q", hostfwd_port=1, token="t", accel="tcg")
    assert argv[argv.index("-bios") + 1] == "/fw/bios-256k.bin"
    assert MachineProfile.from_dict(own.to_dict()) == own
    with pytest.raises(ConfigError, match="bios"):
        MachineProfile.from_dict({"bios": "a b"})


def test_default_kernel_args_skip_the_measured_slow_boot_steps() -> None:
    args = default_profile().kernel_args.split()
    blacklist = next(a for a in args if a.startswith("initcall_blacklist=")).split("=", 1)[1]
    skipped = {"crypto_kdf108_init", "init_kprobe_trace", "i8042_init", "param_sysfs_builtin_init"}
    assert skipped <= set(blacklist.split(","))
    for arg in ("quiet", "cryptomgr.notests", "random.trust_cpu=on", "rodata=off", "noreplace-smp"):
        assert arg in args


def test_user_mode_network_gets_qemus_fixed_address_without_dhcp() -> None:
    p = default_profile(Path("/img"))
    append = (argv := p.qemu_argv("q", hostfwd_port=1, token="t", accel="tcg"))[
        argv.index("-append") + 1
    ]
    assert "farm.ip=10.0.2.15/24,10.0.2.2" in append.split() and append.endswith("farm.token=t")
    # no NIC, DHCP asked for, or an address of the profile's own: no fixed address
    for other in (
        p.without_network(),
        replace(p, user_net_dhcp=True),
        replace(p, kernel_args=p.kernel_args + " farm.ip=10.9.0.5/24"),
    ):
        argv = other.qemu_argv("q", hostfwd_port=1, token="t", accel="tcg")
        assert "farm.ip=10.0.2.15/24,10.0.2.2" not in argv[argv.index("-append") + 1]
    # the command line alone (libvirt, bridges) is not for user-mode networking
    assert "farm.ip" not in p.kernel_cmdline("t")
    assert MachineProfile.from_dict(replace(p, user_net_dhcp=True).to_dict()).user_net_dhcp
    with pytest.raises(ConfigError, match="user_net_dhcp"):
        MachineProfile.from_dict({"user_net_dhcp": "no"})


def test_the_guest_kernel_gets_the_hosts_tsc_rate(tmp_path: Path) -> None:
    """Under TCG the guest's TSC runs at the host's rate and the guest has no HPET or PM
    timer to calibrate it: a host that knows its TSC rate passes it as tsc_early_khz
    (else the guest may end on the refined-jiffies clocksource); other hosts pass nothing."""
    from farm import kernel_args as profile_mod

    known = tmp_path / "known"
    known.write_text("flags\t\t: fpu tsc constant_tsc tsc_known_freq\ncpu MHz\t\t: 2596.144\n")
    scaling = tmp_path / "scaling"
    scaling.write_text("flags\t\t: fpu tsc constant_tsc\ncpu MHz\t\t: 1800.000\n")
    machine = profile_mod.platform.machine()
    if machine not in ("x86_64", "AMD64", "i686", "i386"):
        assert profile_mod.host_tsc_khz(str(known)) is None
        return
    assert profile_mod.host_tsc_khz(str(known)) == 2596144
    assert profile_mod.host_tsc_khz(str(scaling)) is None
    assert profile_mod.host_tsc_khz(str(tmp_path / "missing")) is None
    khz = profile_mod.host_tsc_khz()
    args = default_profile().kernel_cmdline("t").split()
    assert (f"tsc_early_khz={khz}" in args) == (khz is not None)
    assert "tsc_early_khz" not in " ".join(
        MachineProfile.from_dict(GENODE).qemu_argv("g", hostfwd_port=None, token=None)
    )
