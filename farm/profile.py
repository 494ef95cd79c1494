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

import functools
import platform
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from farm import paths
from farm.accel import ACCELS, resolve_accel
from farm.agent.protocol import DEFAULT_PORT
from farm.errors import ConfigError

#: Initcalls skipped at boot, slowest first in bench/boot_breakdown.py's ranking:
#: the kprobe-events self-test, the PS/2 controller and keyboard (the console is
#: serial), KDF and BLAKE2s self-tests, EDAC (no memory controller to watch),
#: encrypted keys, the osnoise tracer, and the sysfs files of built-in modules'
#: parameters (/sys/module/*/parameters: nothing reads them; 1.3 M instructions
#: of the kernel's 37 M before /init, counted with ``boot_breakdown.py --icount``).
BOOT_INITCALL_BLACKLIST = (
    "init_kprobe_trace",
    "i8042_init",
    "atkbd_init",
    "crypto_kdf108_init",
    "blake2s_mod_init",
    "edac_init",
    "init_encrypted",
    "init_osnoise_tracer",
    "param_sysfs_builtin_init",
)
#: Kernel arguments that make the farm image boot fast under TCG; each one
#: measured (see images/README.md, bench/boot_breakdown.py): no crypto self-tests
#: (~0.4 s), entropy from RDRAND so python's first getrandom() doesn't wait for
#: the jitter entropy collector (~0.9 s), quiet console, no read-only remapping
#: of kernel data with its W+X page-table walk (~0.1 s; a test guest), LOCK
#: prefixes left in place on one vCPU (``noreplace-smp``: the kernel's UP
#: patching pokes each of them through text_poke, a full TLB flush each under
#: TCG, 0.2-0.5 s), and initcalls this guest has no use for
#: (BOOT_INITCALL_BLACKLIST, ~0.15 s). ``lapic_timer_frequency=`` (farm's own
#: kernel, farm/image/kernel/*.patch) gives the APIC bus clock of QEMU's local
#: APIC (1 GHz, TCG and KVM alike) instead of calibrating it against the PIT
#: (~0.1-0.2 s); other kernels pass the unknown word on to /init, harmless.
QEMU_APIC_BUS_HZ = 1_000_000_000
FAST_KERNEL_ARGS = (
    "console=ttyS0 quiet loglevel=3 panic=-1 cryptomgr.notests "
    f"initcall_blacklist={','.join(BOOT_INITCALL_BLACKLIST)} "
    "random.trust_cpu=on tsc=reliable no_timer_check rodata=off noreplace-smp "
    f"lapic_timer_frequency={QEMU_APIC_BUS_HZ}"
)
#: The guest's TSC rate under TCG is the host's (QEMU reads the host's TSC), but
#: the guest kernel has no ACPI PM timer or HPET to calibrate it against: its fast
#: PIT calibration often fails under TCG and it falls back to the ``refined-jiffies``
#: clocksource (1 ms resolution, no high-resolution timers). Given the rate with
#: ``tsc_early_khz=`` it skips the calibration and runs on ``tsc``. (Under KVM the
#: guest's TSC also runs at the host's rate, and kvm-clock is preferred anyway.)
TSC_KNOWN_FLAGS = ("tsc_known_freq", "hypervisor")


@functools.cache
def host_tsc_khz(cpuinfo: str = "/proc/cpuinfo") -> int | None:
    """The host's TSC rate in kHz when it can be read, else None.

    /proc/cpuinfo's ``cpu MHz`` is the kernel's ``cpu_khz``, which is the TSC rate
    where the kernel knows the TSC frequency (``tsc_known_freq``) or runs in a
    virtual machine without frequency scaling (``hypervisor``); on a bare-metal
    host it may be the current clock instead, so then None (the guest calibrates).
    """
    if platform.machine() not in ("x86_64", "AMD64", "i686", "i386"):
        return None
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    mhz = 0.0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "cpu MHz" and not mhz:
            try:
                mhz = float(value)
            except ValueError:
                return None
    if "constant_tsc" not in flags or not any(f in flags for f in TSC_KNOWN_FLAGS):
        return None
    return round(mhz * 1000) or None


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
#: lean NIC: IPv4 only (no slirp router adverts) and no guest announce after a restore:
#: kernel code each restored QEMU would translate again under TCG (~1 MiB; issue 18)
LEAN_NETDEV_OPTS, LEAN_VIRTIO_NET_OPTS = ",ipv6=off", ",guest_announce=off"

SESSIONS = ("farm", "genode")


@dataclass(frozen=True)
class MachineProfile:
    """How to start one guest: QEMU binary, board, CPU, memory, NIC, image, arguments."""

    name: str = "default"
    qemu: str = "qemu-system-x86_64"
    machine: str = "q35"
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

    def _farm_image_on_pc(self) -> bool:
        """True for farm's own image (a kernel booted with -kernel) on an x86 PC board."""
        board = self.machine.split(",", 1)[0]
        pc_board = board == "q35" or board.startswith("pc")  # pc, pc-i440fx-*, pc-q35-*
        return self._x86_guest() and pc_board and self.farm_cmdline

    def lean(self) -> bool:
        """True if the board's unused devices are left out (``lean_board``).

        Only for farm's own image on x86 PC boards: it needs no disk controller,
        SMBus, VMware port or NIC option ROM (the kernel comes with -kernel), and
        every QEMU would keep their state in memory.
        """
        return self.lean_board and self._farm_image_on_pc()

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
            self.qemu, "-name", name, "-machine", self.machine, "-accel", chosen,
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
            netdev = "user,id=net0" + LEAN_NETDEV_OPTS * self.lean()
            if hostfwd_port is not None:
                netdev += f",hostfwd=tcp:127.0.0.1:{int(hostfwd_port)}-:{int(port)}"
            if self.nic_onboard:
                argv += ["-nic", f"{netdev},model={self.nic}"]
            else:
                rom = ",romfile=" if self.lean() else ""  # an unused PXE ROM: 256 KiB per QEMU
                rom += LEAN_VIRTIO_NET_OPTS * (self.lean() and self.nic.startswith("virtio-net"))
                argv += ["-netdev", netdev, "-device", f"{self.nic},netdev=net0{rom}"]
        if qmp_socket is not None:
            argv += ["-qmp", f"unix:{_opt(qmp_socket)},server=on,wait=off"]
        argv += [*self.extra_args, *extra]
        return argv


def default_profile(image_dir: Path | None = None) -> MachineProfile:
    """The profile that boots farm's own image from ``image_dir`` (q35 board, TCG-friendly).

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
