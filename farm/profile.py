"""Machine profiles: how to start one guest with QEMU (binary, board, CPU, NIC, image).

A :class:`MachineProfile` is a frozen, validated description; its
:meth:`~MachineProfile.qemu_argv` builds the QEMU command line for user-mode
networking with a host port forwarded to the agent, a serial console going
to a chardev or file, no display and no reboot. Backends (plain process,
libvirt) reuse it.

The default profile boots farm's own image (``images/image.elf`` +
``images/initrd.img``, see :mod:`farm.image`). Other images work too, e.g.
the original Genode ``image.elf`` of taskgen on an emulated ARM board::

    GENODE_PBXA9 = MachineProfile.from_dict({
        "name": "genode-pbxa9",
        "qemu": "qemu-system-arm",
        "machine": "realview-pbx-a9",
        "cpu": "",                    # the board's own Cortex-A9
        "memory": 768,
        "nic": "lan9118",             # the board's NIC: -nic user,model=lan9118,...
        "nic_onboard": True,
        "kernel": "genode/image.elf",
        "initrd": "",
        "kernel_args": "",
        "farm_cmdline": False,        # Genode takes no farm.token= arguments
        "accel": "tcg",
        "session": "genode",          # speak the Taskloader protocol (GenodeSession)
    })
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from farm import paths
from farm.accel import ACCELS, resolve_accel
from farm.agent.protocol import DEFAULT_PORT
from farm.errors import ConfigError
from farm.kernel_args import FAST_KERNEL_ARGS, host_tsc_khz

__all__ = ["FAST_KERNEL_ARGS", "MachineProfile", "default_profile", "host_tsc_khz", "load_profile"]

#: what QEMU's user-mode network (slirp, default ``net=10.0.2.0/24``) hands out by
#: DHCP to the first guest: given statically it saves the guest's udhcpc (~0.15 s)
USER_NET_STATIC_IP = "10.0.2.15/24,10.0.2.2"
#: firmware for booting a kernel directly (-kernel) on x86 PC boards: qboot
#: (shipped with QEMU) starts the kernel ~0.4 s sooner under TCG than SeaBIOS
QBOOT = "qboot.rom"
#: board devices farm's image never uses on x86 PC boards (no disk, no SMBus, no
#: VMware backdoor): each one is device state, buffers (AHCI: 6 ports x 128 KiB
#: IDE buffers) and migration state in every QEMU (``lean_board``)
LEAN_MACHINE_OPTS = "sata=off,smbus=off,vmport=off"
#: QEMU's ``microvm`` board (farm's default): no PCI bus to enumerate, no firmware
#: tables; virtio devices sit on virtio-mmio. farm's kernel has no ACPI, so with
#: ``acpi=off`` QEMU lists those devices on the kernel command line
#: (``virtio_mmio.device=``). Measured: ~50-70 ms off a cold boot under TCG
#: (bench/boot.py --compare, images/README.md).
MICROVM = "microvm"
MICROVM_OPTS = "acpi=off"
#: lean NIC: IPv4 only (no slirp router adverts) and no guest announce after a restore:
#: kernel code each restored QEMU would translate again under TCG (~1 MiB; issue 18)
LEAN_NETDEV_OPTS, LEAN_VIRTIO_NET_OPTS = ",ipv6=off", ",guest_announce=off"

SESSIONS = ("farm", "genode")


@dataclass(frozen=True)
class MachineProfile:
    """How to start one guest: QEMU binary, board, CPU, memory, NIC, image, arguments."""

    name: str = "default"
    qemu: str = "qemu-system-x86_64"
    machine: str = "microvm"  # farm's image: no PCI, virtio-mmio devices (boots sooner)
    cpu: str = "qemu64,+rdrand"
    memory: int = 256  # MiB
    smp: int = 1
    nic: str = "virtio-net-pci"  # "" = no NIC at all
    nic_onboard: bool = False  # the board's own NIC (-nic model=...), not a -device
    kernel: Path = Path("images/image.elf")
    initrd: Path | None = Path("images/initrd.img")
    kernel_args: str = FAST_KERNEL_ARGS
    extra_args: tuple[str, ...] = ()
    accel: str = "auto"
    guest_port: int = DEFAULT_PORT  # where the agent listens inside the guest
    farm_cmdline: bool = True  # append farm.token=/farm.port= to the kernel args
    session: str = "farm"  # which protocol the guest speaks: farm agent or Genode dom0
    serial: bool = True  # give the board a serial console (-serial chardev:console)
    bios: str = "auto"  # -bios: "auto" = qboot for farm's image on x86 PC boards, "" = board's
    user_net_dhcp: bool = False  # user-mode net: DHCP in the guest instead of the fixed address
    tb_size: int = 0  # TCG translation buffer, MiB (-accel tcg,tb-size=); 0 = QEMU's default
    lean_board: bool = True  # farm's image on x86 PC boards: no SATA/SMBus/vmport, no NIC ROM

    def __post_init__(self) -> None:
        _check(
            isinstance(self.name, str) and self.name != "", "name", "a non-empty string", self.name
        )
        _check(
            isinstance(self.qemu, str) and self.qemu != "", "qemu", "a QEMU binary name", self.qemu
        )
        _check(
            isinstance(self.machine, str) and self.machine != "",
            "machine",
            "a machine type",
            self.machine,
        )
        _check(isinstance(self.cpu, str), "cpu", "a string ('' = board default)", self.cpu)
        _check(
            _int(self.memory) and 16 <= self.memory <= 1 << 20,
            "memory",
            "MiB, 16..1048576",
            self.memory,
        )
        _check(_int(self.smp) and 1 <= self.smp <= 256, "smp", "an integer 1..256", self.smp)
        _check(isinstance(self.nic, str), "nic", "a NIC model ('' = none)", self.nic)
        _check(isinstance(self.kernel, Path), "kernel", "a path", self.kernel)
        _check(
            self.initrd is None or isinstance(self.initrd, Path),
            "initrd",
            "a path or None",
            self.initrd,
        )
        _check(isinstance(self.kernel_args, str), "kernel_args", "a string", self.kernel_args)
        _check(
            isinstance(self.extra_args, tuple) and all(isinstance(a, str) for a in self.extra_args),
            "extra_args",
            "a tuple of strings",
            self.extra_args,
        )
        _check(self.accel in ACCELS, "accel", f"one of {', '.join(ACCELS)}", self.accel)
        _check(
            _int(self.guest_port) and 1 <= self.guest_port <= 65535,
            "guest_port",
            "a port",
            self.guest_port,
        )
        _check(
            isinstance(self.farm_cmdline, bool), "farm_cmdline", "true or false", self.farm_cmdline
        )
        _check(self.session in SESSIONS, "session", f"one of {', '.join(SESSIONS)}", self.session)
        _check(isinstance(self.serial, bool), "serial", "true or false", self.serial)
        _check(isinstance(self.nic_onboard, bool), "nic_onboard", "true or false", self.nic_onboard)
        _check(
            isinstance(self.user_net_dhcp, bool),
            "user_net_dhcp",
            "true or false",
            self.user_net_dhcp,
        )
        _check(_int(self.tb_size) and 0 <= self.tb_size <= 1 << 16, "tb_size", "MiB", self.tb_size)
        _check(isinstance(self.lean_board, bool), "lean_board", "true or false", self.lean_board)
        _check(
            isinstance(self.bios, str) and not any(c.isspace() for c in self.bios),
            "bios",
            "a firmware file ('auto', '' = the board's default)",
            self.bios,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MachineProfile:
        """Build a profile from plain data (TOML/JSON); ConfigError names any bad key."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"machine profile must be a table, not {type(data).__name__}")
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"machine profile: unknown key(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        values: dict[str, Any] = dict(data)
        for key in ("kernel", "initrd"):
            if key in values:
                value = values[key]
                if key == "initrd" and value in (None, ""):
                    values[key] = None
                elif isinstance(value, str | Path) and str(value):
                    values[key] = Path(value)
                else:
                    raise ConfigError(f"machine profile: {key} must be a path, not {value!r}")
        if "extra_args" in values:
            extra = values["extra_args"]
            if isinstance(extra, str):
                values["extra_args"] = tuple(shlex.split(extra))
            elif isinstance(extra, Sequence) and all(isinstance(a, str) for a in extra):
                values["extra_args"] = tuple(extra)
            else:
                raise ConfigError(f"machine profile: extra_args must be strings, not {extra!r}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (round-trips through :meth:`from_dict`)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            out[f.name] = (
                str(value)
                if isinstance(value, Path)
                else list(value)
                if f.name == "extra_args"
                else value
            )
        out["initrd"] = "" if self.initrd is None else str(self.initrd)
        return out

    def with_images(self, image_dir: Path) -> MachineProfile:
        """The same profile booting ``image.elf``/``initrd.img`` of another directory."""
        return replace(self, kernel=image_dir / "image.elf", initrd=image_dir / "initrd.img")

    def without_network(self) -> MachineProfile:
        """The same profile with no NIC (the guest must report that, not hang)."""
        return replace(self, nic="")

    def resolved_accel(self, accel: str | None = None) -> str:
        """``kvm`` or ``tcg`` for ``accel`` (default: the profile's); ``auto`` probes once.

        For farm's own (Linux) image the probe also boots the profile's kernel
        under KVM, since a tiny test guest may run where Linux hangs.
        """
        kernel = self.kernel if self.farm_cmdline and self.kernel.is_file() else None
        return resolve_accel(accel or self.accel, self.qemu, kernel=kernel)

    def resolved_bios(self) -> str:
        """The -bios firmware to use ('' = the board's default); resolves ``auto``.

        ``auto`` picks qboot when farm's own image (a Linux kernel booted with
        ``-kernel``) runs on an x86 PC board (``pc*``, ``q35``): it needs no
        option ROMs, disks or boot menu, so the kernel starts sooner. Other
        boards and images (e.g. Genode on ARM) keep their own firmware.
        """
        if self.bios != "auto":
            return self.bios
        return QBOOT if self._farm_image_on_pc() else ""

    @property
    def board(self) -> str:
        """The machine type without its options (``q35,smm=off`` -> ``q35``)."""
        return self.machine.split(",", 1)[0]

    def _pc_board(self) -> bool:
        board = self.board
        return self._x86_guest() and (board == "q35" or board.startswith("pc"))  # pc-i440fx-*...

    def virtio_mmio(self) -> bool:
        """True if virtio devices sit on virtio-mmio (x86 ``microvm``), not on PCI."""
        return self._x86_guest() and self.board == MICROVM

    def virtio_device(self, kind: str) -> str:
        """The QEMU device of virtio ``kind`` (``serial``, ``net``) on this board's bus."""
        return f"virtio-{kind}-device" if self.virtio_mmio() else f"virtio-{kind}-pci"

    @property
    def nic_device(self) -> str:
        """The NIC model for this board: a virtio one follows the bus.

        ``virtio-net-pci`` on ``microvm`` is ``virtio-net-device`` and the other
        way round on a PC board, so one ``nic`` works on both; others are as given.
        """
        nic = self.nic
        stem = nic.removesuffix("-pci").removesuffix("-device")
        if nic == stem or not nic.startswith("virtio-"):
            return nic
        if self.virtio_mmio():
            return f"{stem}-device"
        return f"{stem}-pci" if self._pc_board() else nic

    def machine_opts(self) -> str:
        """The ``-machine`` value: farm's image on ``microvm`` gets ``acpi=off`` unless set."""
        if self.virtio_mmio() and self.farm_cmdline and "acpi=" not in self.machine:
            return f"{self.machine},{MICROVM_OPTS}"
        return self.machine

    def _farm_image_on_pc(self) -> bool:
        """True for farm's own image (a kernel booted with -kernel) on an x86 PC board."""
        return self._pc_board() and self.farm_cmdline

    def lean(self) -> bool:
        """True if the board's unused devices are left out (``lean_board``).

        Only for farm's own image on x86 PC boards: it needs no disk controller,
        SMBus, VMware port or NIC option ROM (the kernel comes with -kernel), and
        every QEMU would keep their state in memory.
        """
        return self.lean_board and self._farm_image_on_pc()

    def lean_net(self) -> bool:
        """True if the NIC is farm's lean one (IPv4-only slirp, no announce after a restore).

        farm's own image on an x86 PC board or on ``microvm`` (``lean_board``).
        """
        return self.lean_board and self.farm_cmdline and (self._pc_board() or self.virtio_mmio())

    def _x86_guest(self) -> bool:
        return Path(self.qemu).name.removeprefix("qemu-system-") in ("x86_64", "i386")

    def kernel_cmdline(
        self, token: str | None, port: int | None = None, *, user_net: bool = False
    ) -> str:
        """Kernel command line: the profile's arguments plus farm.token/farm.port.

        ``user_net``: the NIC is on QEMU's user-mode network, whose addresses are
        fixed; unless ``user_net_dhcp`` (or a ``farm.ip=`` of the profile's own)
        the guest gets QEMU's DHCP answer as a static ``farm.ip=`` and skips DHCP.
        """
        args = self.kernel_args
        if self.farm_cmdline:
            if "tsc_early_khz=" not in args and self._x86_guest() and (khz := host_tsc_khz()):
                args += f" tsc_early_khz={khz}"
            if user_net and self.nic and not self.user_net_dhcp and "farm.ip=" not in args:
                args += f" farm.ip={USER_NET_STATIC_IP}"
            if token is not None:
                if not token or any(c.isspace() for c in token):
                    raise ConfigError("token must be non-empty and contain no whitespace")
                args += f" farm.token={token}"
            port = self.guest_port if port is None else port
            if port != DEFAULT_PORT:
                args += f" farm.port={port}"
        return args.strip()

    def qemu_argv(
        self,
        name: str,
        *,
        hostfwd_port: int | None,
        token: str | None,
        guest_port: int | None = None,
        console: Path | str = "stdio",
        console_log: Path | None = None,
        qmp_socket: Path | None = None,
        accel: str | None = None,
        extra: Sequence[str] = (),
    ) -> list[str]:
        """The QEMU command line for one guest.

        ``hostfwd_port``: loopback port forwarded to the guest's agent port
        (user-mode networking; None = no forward). ``console``: a Path (serial
        console written to that file) or a chardev backend spec such as
        ``"stdio"``, ``"pty"`` or ``"socket,path=/x.sock,server=on,wait=off"``;
        ``console_log`` additionally logs it to a file. ``qmp_socket``: unix
        socket for QMP (``quit`` shuts the guest down). ``accel`` overrides
        the profile's (``auto`` probes).
        """
        port = self.guest_port if guest_port is None else guest_port
        chosen = self.resolved_accel(accel)
        if chosen == "tcg" and self.tb_size:  # idle guests: most of QEMU's own memory
            chosen += f",tb-size={self.tb_size}"
        argv = [
            self.qemu, "-name", name, "-machine", self.machine_opts(), "-accel", chosen,
            "-m", str(self.memory), "-smp", str(self.smp),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        ]  # fmt: skip
        if self.lean():
            argv += ["-machine", LEAN_MACHINE_OPTS]
        if self.cpu:
            argv += ["-cpu", self.cpu]
        if bios := self.resolved_bios():
            argv += ["-bios", bios]
        if self.serial:
            if isinstance(console, Path):
                chardev = f"file,id=console,path={_opt(console)}"
            else:
                chardev = f"{console},id=console"
            if console_log is not None:
                chardev += f",logfile={_opt(console_log)},logappend=off"
            argv += ["-chardev", chardev, "-serial", "chardev:console"]
        argv += ["-kernel", str(self.kernel)]
        if self.initrd is not None:
            argv += ["-initrd", str(self.initrd)]
        cmdline = self.kernel_cmdline(token, port, user_net=bool(self.nic))
        if cmdline:
            argv += ["-append", cmdline]
        if self.nic:
            nic = self.nic_device
            netdev = "user,id=net0" + LEAN_NETDEV_OPTS * self.lean_net()
            if hostfwd_port is not None:
                netdev += f",hostfwd=tcp:127.0.0.1:{int(hostfwd_port)}-:{int(port)}"
            if self.nic_onboard:
                argv += ["-nic", f"{netdev},model={nic}"]
            else:
                rom = ",romfile=" if self.lean() else ""  # an unused PXE ROM: 256 KiB per QEMU
                rom += LEAN_VIRTIO_NET_OPTS * (self.lean_net() and nic.startswith("virtio-net"))
                argv += ["-netdev", netdev, "-device", f"{nic},netdev=net0{rom}"]
        if qmp_socket is not None:
            argv += ["-qmp", f"unix:{_opt(qmp_socket)},server=on,wait=off"]
        argv += [*self.extra_args, *extra]
        return argv


def default_profile(image_dir: Path | None = None) -> MachineProfile:
    """The profile that boots farm's own image from ``image_dir`` (microvm board, TCG-friendly).

    ``image_dir`` defaults to :func:`farm.paths.image_dir` (any working directory).
    """
    return MachineProfile().with_images(paths.image_dir() if image_dir is None else image_dir)


def load_profile(
    overrides: Mapping[str, Any] | None = None, image_dir: Path | None = None
) -> MachineProfile:
    """The default profile booting ``image_dir``'s image, with ``overrides`` (``[profile]``)."""
    base = default_profile(Path(paths.image_dir() if image_dir is None else image_dir).resolve())
    if not overrides:
        return base
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"machine profile must be a table, not {type(overrides).__name__}")
    return MachineProfile.from_dict({**base.to_dict(), **overrides})


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, key: str, expected: str, value: object = None) -> None:
    if not ok:
        raise ConfigError(f"machine profile: {key} must be {expected}, not {value!r}")


def _opt(path: Path) -> str:
    """A path as a QEMU option value (commas doubled)."""
    return str(path).replace(",", ",,")
