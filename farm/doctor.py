"""Checks behind ``farm doctor``: is this machine ready for farm?

Each check says PASS/WARN/FAIL and how to fix it (the command is
:mod:`farm.cli.doctor`).

Checks: QEMU, its board (the profile's machine type), the KVM probe, screen, dhcpd, the
bridge (network = "bridge"; read-only), the guest image (present, and built
from the current agent/recipe/builder sources), root or /dev/kvm access, and
whether the state and log dirs are writable. Then the effective configuration
with the source of every value. Fast (a few seconds) and side-effect free: it
only creates temporary directories, which it removes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.errors import FarmError, LaunchError
from farm.qemu.process import qemu_machines, qemu_version

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
SUBPROCESS_TIMEOUT = 15.0
SETUP_HINT = "run scripts/setup (as root) or apt-get install"


@dataclass(frozen=True)
class Check:
    """One doctor check: its name, PASS/WARN/FAIL, what was found and how to fix it."""

    name: str
    status: str
    detail: str
    fix: str = ""


def _which(name: str) -> str | None:
    """Like shutil.which, also looking in the sbin dirs non-root PATHs lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def check_qemu(qemu: str) -> Check:
    """The profile's QEMU binary is installed; its version."""
    path = _which(qemu)
    if path is None:
        return Check("qemu", FAIL, f"{qemu} not found", f"{SETUP_HINT} qemu-system-x86")
    try:
        version = qemu_version(path, timeout=SUBPROCESS_TIMEOUT)
    except LaunchError as exc:
        return Check("qemu", FAIL, f"{path} --version failed: {exc}", "reinstall qemu-system-x86")
    return Check("qemu", PASS, f"{path}: {version or 'version unknown'}")


def check_board(profile: Any) -> Check:
    """The profile's board is one this QEMU has (``microvm``, farm's default, may be missing
    from some builds: then ``q35`` boots the same image on PCI)."""
    path = _which(profile.qemu)
    if path is None:
        return Check("board", WARN, f"{profile.board}: no {profile.qemu} to ask", "see qemu")
    try:
        machines = qemu_machines(path, timeout=SUBPROCESS_TIMEOUT)
    except LaunchError as exc:
        return Check("board", FAIL, str(exc), "reinstall QEMU")
    if profile.board in machines:
        return Check("board", PASS, f"{profile.board} ({profile.machine_opts()})")
    fix = 'set machine = "q35" in [profile] (PCI, ~0.07 s slower cold boots)'
    if profile.board != "microvm":
        fix = f"set machine in [profile] to one of `{profile.qemu} -machine help`"
    return Check("board", FAIL, f"{path} has no machine type {profile.board}", fix)


_LIBVIRT_PROBE = """
import shutil, sys, tempfile, threading
from pathlib import Path
import libvirt
from farm.backend.libvirt_xml import write_qemu_conf
root = Path(tempfile.mkdtemp(prefix="farm-doctor-libvirt-"))
try:
    libvirt.virEventRegisterDefaultImpl()
    threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl() for _ in iter(int, 1)],
                     daemon=True).start()
    write_qemu_conf(root)
    conn = libvirt.open("qemu:///embed?root=" + str(root))
    print("libvirt", libvirt.getVersion(), conn.getURI())
    conn.close()
finally:
    shutil.rmtree(root, ignore_errors=True)
"""


def check_libvirt(needed: bool) -> Check:
    """libvirt-python imports and the embedded QEMU driver opens (in a bounded child process)."""
    level = FAIL if needed else WARN
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _LIBVIRT_PROBE],
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return Check(
            "libvirt", level, f"embedded driver did not open in {SUBPROCESS_TIMEOUT:g}s", ""
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Check(
            "libvirt",
            level,
            f"embedded driver unusable: {last}",
            f"{SETUP_HINT} libvirt-daemon-driver-qemu libvirt-dev; pip install libvirt-python"
            + ("" if needed else " (only needed for backend = 'libvirt')"),
        )
    version = proc.stdout.split()[1] if len(proc.stdout.split()) > 1 else "?"
    major, minor, micro = (
        int(version) // 1_000_000,
        int(version) // 1000 % 1000,
        int(version) % 1000,
    )
    return Check(
        "libvirt", PASS, f"libvirt {major}.{minor}.{micro}, qemu:///embed opens and closes"
    )


def check_kvm(profile: Any) -> Check:
    """The bounded KVM probe (cached per host boot): KVM or TCG fallback."""
    from farm import accel

    if profile.accel != "auto":
        return Check("kvm", PASS, f"profile accel = {profile.accel!r} (no probe)")
    usable, reason = _kvm_probe(profile, accel)
    if usable:
        return Check("kvm", PASS, f"KVM usable: {reason}")
    return Check(
        "kvm",
        WARN,
        f"KVM not usable, guests run under TCG (slower, still correct): {reason}",
        "enable virtualisation (nested virt for VMs) and give access to /dev/kvm; "
        "or set accel = 'tcg' in [profile] to skip the probe",
    )


def _kvm_probe(profile: Any, accel: Any) -> tuple[bool, str]:
    """The probe ``farm run`` makes (same QEMU and kernel): one cache entry for both."""
    quiet = logging.getLogger("farm.accel")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the doctor reports the fallback itself
    try:
        mode = profile.resolved_accel("auto")
    finally:
        quiet.setLevel(level)
    kernel = profile.kernel if profile.farm_cmdline and profile.kernel.is_file() else None
    cached = accel.cached(profile.qemu, kernel)
    return mode == "kvm", cached[1] if cached else mode


def check_tool(name: str, binary: str, package: str, needed: bool, why: str) -> Check:
    """A host tool is on PATH (FAIL if this config needs it, WARN otherwise)."""
    path = _which(binary)
    if path:
        return Check(name, PASS, path)
    return Check(
        name, FAIL if needed else WARN, f"{binary} not found ({why})", f"{SETUP_HINT} {package}"
    )


def check_bridge(config: Any) -> Check:
    """network = "bridge": does the bridge exist (read-only; farm creates it on start)."""
    if config.network != "bridge":
        return Check("bridge", PASS, "network = 'user' (no bridge needed)")
    from farm.bridge.bridge import Bridge, plan_for

    try:
        plan = plan_for(config)
        exists = Bridge(plan.bridge, plan.bridge_interface).exists()
    except FarmError as exc:
        return Check("bridge", FAIL, f"cannot inspect {config.bridge_name}: {exc}", "run as root")
    if exists:
        return Check("bridge", PASS, f"{plan.bridge} exists ({plan.bridge_interface})")
    if os.geteuid() != 0:
        return Check(
            "bridge",
            FAIL,
            f"{plan.bridge} missing and not root: farm cannot create it",
            "run farm as root, or `sudo farm net up` before starting",
        )
    return Check("bridge", WARN, f"{plan.bridge} missing: farm creates it on start", "farm net up")


def check_image(config: Any, profile: Any) -> Check:
    """Kernel and initrd present; farm's image also built from today's sources."""
    if config.backend == "local":
        return Check("image", PASS, "backend = 'local' boots no image")
    missing = [
        str(p) for p in (profile.kernel, profile.initrd) if p is not None and not p.is_file()
    ]
    if missing:
        return Check("image", FAIL, f"missing {', '.join(missing)}", "farm image build")
    image_dir = Path(config.image_dir).resolve()
    if Path(profile.kernel).resolve() != image_dir / "image.elf":
        return Check("image", PASS, f"user image {profile.kernel} present (not farm's build)")
    stale = image_staleness(image_dir)
    if stale:
        return Check(
            "image", WARN, f"image in {image_dir} is not current: {stale}", "farm image build"
        )
    return Check("image", PASS, f"{image_dir}: built from the current sources")


def image_staleness(image_dir: Path) -> str:
    """Why the image in ``image_dir`` does not match today's local inputs ('' when it does).

    Compares the manifest with the agent, recipe and builder digests and the
    outputs' size and SHA256; package versions need apt and are left to
    ``farm image build``.
    """
    from farm.image import builder
    from farm.image.debs import sha256_file

    manifest = builder.load_manifest(image_dir / builder.MANIFEST_NAME)
    if not manifest:
        return "no manifest.json"
    recipe = builder.RECIPE_DIR
    want = {
        "kernel": {
            "builder": builder.BUILDER_VERSION,
            "code": builder.digest_files([builder._HERE / n for n in builder._KERNEL_CODE]),
        },
        "initrd": {
            "builder": builder.BUILDER_VERSION,
            "agent_digest": builder.digest_files(builder.agent_sources(), builder.AGENT_DIR),
            "init_digest": builder.digest_files([recipe / "init.sh.in"]),
            "udhcpc_digest": builder.digest_files([recipe / "udhcpc.script"]),
            "allowlist_digest": builder.digest_files([recipe / "python-modules.txt"]),
            "code": builder.digest_files([builder._HERE / n for n in builder._INITRD_CODE]),
        },
    }
    for part, inputs in want.items():
        old = manifest.get(part, {})
        changed = sorted(k for k, v in inputs.items() if old.get("inputs", {}).get(k) != v)
        if changed:
            return f"{part} inputs changed: {', '.join(changed)}"
        out = image_dir / (builder.KERNEL_NAME if part == "kernel" else builder.INITRD_NAME)
        recorded = old.get("output", {})
        if out.stat().st_size != recorded.get("size") or sha256_file(out) != recorded.get("sha256"):
            return f"{out.name} differs from the manifest"
    return ""


def check_privileges(config: Any) -> Check:
    """Root, or at least /dev/kvm access (bridged networking needs root)."""
    if os.geteuid() == 0:
        return Check("privileges", PASS, "running as root")
    kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
    if config.network == "bridge":
        return Check("privileges", FAIL, "not root: bridge, taps and dhcpd need root", "sudo farm")
    detail = "not root; /dev/kvm " + ("accessible" if kvm else "not accessible (TCG only)")
    return Check(
        "privileges", WARN if not kvm else PASS, detail, "" if kvm else "add yourself to group kvm"
    )


def check_writable(label: str, path: Path) -> Check:
    """``path`` is a writable dir, or its nearest existing parent is (farm creates it)."""
    probe = Path(path).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == Path(path).resolve() else f" (created on start under {probe})"
        return Check(label, PASS, f"{path} writable{where}")
    return Check(label, FAIL, f"{path} not writable ({probe})", f"fix permissions of {probe}")


def run_checks(config: Any) -> list[Check]:
    """Every check for ``config`` (a FarmConfig), in display order."""
    from farm.profile import load_profile

    try:
        profile = load_profile(config.profile, config.image_dir)
    except FarmError as exc:
        return [Check("profile", FAIL, str(exc), "fix [profile] in farm.toml")]
    vm = config.backend != "local"
    bridged = config.network == "bridge"
    return [
        check_qemu(profile.qemu),
        check_board(profile),
        check_libvirt(needed=config.backend == "libvirt"),
        check_kvm(profile),
        check_tool(
            "screen", "screen", "screen", config.backend == "qemu", "consoles, qemu backend"
        ),
        check_tool(
            "dhcpd",
            "dhcpd",
            "isc-dhcp-server",
            vm and bridged and config.dhcp == "farm",
            "network = 'bridge'",
        ),
        check_bridge(config),
        check_image(config, profile),
        check_privileges(config),
        check_writable("state_dir", config.state_dir),
        check_writable("log_dir", config.log_dir),
    ]


def config_sources(config_path: str | None) -> tuple[Any, list[dict[str, Any]]]:
    """The effective FarmConfig and, per field, its value and source (default/farm.toml/env)."""
    from farm.config import FarmConfig

    path: Path | None = Path(config_path) if config_path else None
    origin = "--config"
    if path is None and os.environ.get("FARM_CONFIG"):
        path, origin = Path(os.environ["FARM_CONFIG"]), "env FARM_CONFIG"
    elif path is None and Path("farm.toml").exists():
        path, origin = Path("farm.toml"), "farm.toml"
    config = FarmConfig.load(path)
    data: dict[str, Any] = tomllib.loads(path.read_text()) if path is not None else {}
    rows = []
    for f in dataclasses.fields(FarmConfig):
        value = getattr(config, f.name)
        source = f"{origin} ({path})" if f.name in data else "default"
        if f.name == "token":  # never printed
            if value is not None:
                value = "***"
            elif os.environ.get("FARM_TOKEN"):
                value, source = "***", "env FARM_TOKEN"
            else:
                value = f"(generated in {Path(config.state_dir) / 'token'})"
        elif f.name == "libvirt_uri" and value is None:
            value = config.resolved_libvirt_uri
            if os.environ.get("LIBVIRT_DEFAULT_URI"):
                source = "env LIBVIRT_DEFAULT_URI"
            else:
                value = f"{value} (derived)"
        rows.append({"key": f.name, "value": _jsonable(value), "source": source})
    return config, rows


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
