"""Which QEMU accelerator to use: a bounded KVM probe with TCG fallback.

``/dev/kvm`` existing is not enough: on some hosts (nested virtualisation)
KVM guests hang forever. :func:`probe_kvm` therefore boots a 7-byte guest
with ``-accel kvm`` that writes to ``isa-debug-exit``; only if QEMU exits
with the expected status within a few seconds is KVM usable. On timeout the
probe QEMU is killed (its whole process group). The answer is cached per
process and per (QEMU binary, kernel) probed, and on disk for the current host
boot, one entry per (QEMU binary, kernel) (file named by ``FARM_ACCEL_CACHE``,
default ``~/.cache/farm/accel.json``; ``off`` disables it) so each new farm
process, ``farm doctor`` included, does not pay the probe again; the fallback
to TCG is logged exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import selectors
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from farm.errors import ConfigError, LaunchError
from farm.qemu.process import QemuProcess

log = logging.getLogger(__name__)

ACCELS = ("auto", "kvm", "tcg")
PROBE_TIMEOUT = 3.0
#: port writes (VM exits) the probe guest does before it exits
PIO_EXITS = 20000
_DEBUG_EXIT_PORT = 0xF4
_MAGIC = 0x31
#: isa-debug-exit makes QEMU exit with (value << 1) | 1
PROBE_OK_STATUS = (_MAGIC << 1) | 1

_cache: dict[str, tuple[str, str]] = {}
_lock = threading.Lock()


def probe_payload() -> bytes:
    """A 32-bit ELF with a PVH entry note: PIO_EXITS port writes, then ``out 0xf4, 0x31``.

    Each write to port 0x80 is a VM exit under KVM: a healthy KVM does them in
    milliseconds, a broken nested setup takes seconds (or never finishes).
    """
    load_addr = 0x100000
    code = (
        b"\xb9"
        + struct.pack("<I", PIO_EXITS)  # mov ecx, PIO_EXITS
        + b"\xe6\x80\xe2\xfc"  # l: out 0x80, al; loop l
        + bytes([0xB0, _MAGIC, 0xE6, _DEBUG_EXIT_PORT, 0xF4, 0xEB, 0xFD])  # exit; hlt
    )
    ehsize, phsize = 52, 32
    note_off = ehsize + 2 * phsize
    note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", load_addr)
    code_off = note_off + len(note)
    header = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)
    header += struct.pack(
        "<HHIIIIIHHHHHH", 2, 3, 1, load_addr, ehsize, 0, 0, ehsize, phsize, 2, 40, 0, 0
    )
    load = struct.pack("<IIIIIIII", 1, code_off, load_addr, load_addr, len(code), len(code), 5, 4)
    pnote = struct.pack("<IIIIIIII", 4, note_off, 0, 0, len(note), len(note), 4, 4)
    return header + load + pnote + note + code


def _qemu_arch(qemu: str) -> str:
    return Path(qemu).name.removeprefix("qemu-system-")


def _host_matches(qemu: str) -> bool:
    arch = _qemu_arch(qemu)
    host = platform.machine()
    return arch == host or (arch, host) in {("x86_64", "amd64"), ("i386", "x86_64")}


def probe_kvm(
    qemu: str = "qemu-system-x86_64",
    timeout: float = PROBE_TIMEOUT,
    kernel: Path | None = None,
) -> tuple[bool, str]:
    """(usable, reason): run test guests under KVM, each killed after ``timeout`` seconds.

    Stage 1 boots the tiny payload of :func:`probe_payload`. Stage 2 (when a
    Linux ``kernel`` with a PVH note is given) boots it with ``earlyprintk``
    and waits for its first console line: on some nested hosts a tiny guest
    runs under KVM while Linux hangs before printing anything.
    """
    if not _host_matches(qemu):
        return False, f"{qemu} does not emulate this host's architecture ({platform.machine()})"
    if _qemu_arch(qemu) not in ("x86_64", "i386"):
        return False, f"no KVM probe payload for {qemu}"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    base = [
        qemu, "-accel", "kvm", "-machine", "pc", "-nodefaults", "-no-user-config",
        "-display", "none", "-monitor", "none", "-no-reboot",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="farm-kvm-probe-") as tmp:
        payload = Path(tmp) / "probe.elf"
        payload.write_bytes(probe_payload())
        argv = [
            *base, "-m", "16", "-serial", "none", "-kernel", str(payload),
            "-device", f"isa-debug-exit,iobase={_DEBUG_EXIT_PORT:#x},iosize=0x04",
        ]  # fmt: skip
        status, output = _run_bounded(argv, timeout, until=None)
        if status is None:
            return False, f"KVM test guest did not finish within {timeout:g} s ({output})"
        if status != PROBE_OK_STATUS:
            return False, f"KVM test guest failed (status {status}: {output[-200:]})"
    if kernel is None:
        return True, "KVM test guest ran"
    argv = [
        *base, "-m", "128", "-serial", "stdio", "-kernel", str(kernel),
        "-append", "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 loglevel=4",
    ]  # fmt: skip
    status, output = _run_bounded(argv, timeout, until=b"Linux version")
    if status == _FOUND:
        return True, f"KVM test guest ran and {Path(kernel).name} started"
    if status is None:
        return False, (
            f"{Path(kernel).name} printed nothing under KVM within {timeout:g} s "
            "(KVM guests hang here)"
        )
    return False, f"{Path(kernel).name} under KVM exited with {status}: {output[-200:]}"


_FOUND = -1000


def _run_bounded(argv: list[str], timeout: float, until: bytes | None) -> tuple[int | None, str]:
    """Run argv for at most ``timeout`` s; (exit status | _FOUND | None on timeout, output).

    With ``until``, stop (kill) as soon as stdout contains it and return _FOUND.
    Whatever happens, the probe QEMU and its whole process group are gone afterwards.
    """
    proc = QemuProcess(argv, name="kvm-probe", pipe_stdout=True)
    try:
        proc.launch()
    except LaunchError as exc:
        return 1, f"cannot run {argv[0]}: {exc.__cause__ or exc}"
    stdout = proc.stdout
    assert stdout is not None
    deadline = time.monotonic() + timeout
    out = bytearray()
    found = False
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not sel.select(left):
                    break
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
                if until is not None and until in out:
                    found = True
                    break
        if found:
            return _FOUND, out.decode(errors="replace")
        try:
            status = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            status = None
        return status, out.decode(errors="replace").strip() or "no output"
    finally:
        proc.shutdown(hard=True)


def resolve_accel(
    accel: str = "auto",
    qemu: str = "qemu-system-x86_64",
    timeout: float = PROBE_TIMEOUT,
    kernel: Path | None = None,
) -> str:
    """``kvm`` or ``tcg`` for a requested accel; ``auto`` probes once per process.

    The probe result is cached per (QEMU binary, kernel); the fallback to TCG
    is logged once, as one warning line.
    """
    if accel not in ACCELS:
        raise ConfigError(f"accel must be one of {', '.join(ACCELS)}, not {accel!r}")
    if accel != "auto":
        return accel
    key = probe_key(qemu, kernel)
    with _lock:
        if key not in _cache and (saved := _disk_get(key)) is not None:
            _cache[key] = saved
            if saved[0] == "tcg":
                log.warning("KVM not usable (probed earlier this boot), using TCG: %s", saved[1])
        if key not in _cache:
            usable, reason = probe_kvm(qemu, timeout, kernel)
            if usable:
                log.info("using KVM for %s (%s)", qemu, reason)
                _cache[key] = ("kvm", reason)
            else:
                log.warning("KVM not usable, falling back to TCG: %s", reason)
                _cache[key] = ("tcg", reason)
            _disk_put(key, _cache[key])
        return _cache[key][0]


def probe_key(qemu: str, kernel: Path | None = None) -> str:
    """The one cache key of a probe: QEMU binary and the kernel it also boots (if any)."""
    return f"{qemu}|{Path(kernel).resolve() if kernel else ''}"


def cached(qemu: str, kernel: Path | None = None) -> tuple[str, str] | None:
    """(accel, reason) of the probe of (``qemu``, ``kernel``) this process knows, if any."""
    with _lock:
        return _cache.get(probe_key(qemu, kernel))


def _disk_path() -> Path | None:
    setting = os.environ.get("FARM_ACCEL_CACHE", "")
    if setting == "off":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "farm" / "accel.json"


def _boot_key(key: str) -> str:
    """Probe results hold for one host boot, one /dev/kvm and one QEMU binary."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    parts = [boot, key]
    for path in ("/dev/kvm", key.split("|")[0]):
        try:
            parts.append(str(os.stat(path).st_mtime_ns))
        except OSError:
            parts.append("-")
    return "|".join(parts)


def _disk_get(key: str) -> tuple[str, str] | None:
    path = _disk_path()
    if path is None:
        return None
    try:
        entry = json.loads(path.read_text()).get(_boot_key(key))
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(entry, list) and len(entry) == 2 and entry[0] in ("kvm", "tcg"):
        return (entry[0], str(entry[1]))
    return None


def _disk_put(key: str, value: tuple[str, str]) -> None:
    path = _disk_path()
    if path is None:
        return
    boot = _boot_key(key).split("|", 1)[0]
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    # one entry per (QEMU, kernel) of this boot: doctor's and run's probes keep each other
    entries = {k: v for k, v in entries.items() if k.split("|", 1)[0] == boot}
    entries[_boot_key(key)] = list(value)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries))
        tmp.replace(path)
    except OSError as exc:
        log.debug("cannot save accel probe result to %s: %s", path, exc)


def clear_cache() -> None:
    """Forget probe results (tests; or after the host's KVM setup changed)."""
    with _lock:
        _cache.clear()
