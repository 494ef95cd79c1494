"""farm's guest kernel command line: the arguments that make its image boot fast under TCG.

Each one measured (bench/boot_breakdown.py, images/README.md); the guest's TSC
rate is read from the host once (:func:`host_tsc_khz`).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

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
