"""Assemble the guest's initramfs: busybox, python, NIC modules, agent, /init."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from farm.errors import ImageError
from farm.image import native, pyruntime
from farm.image.cpio import Tree, compress
from farm.image.kernel import GUEST_MODULES, KernelFiles, module_load_order

log = logging.getLogger(__name__)

#: what /init mounts with one ``mount -a`` (each mount command is a fork under TCG);
#: /dev/shm needs a directory in the devtmpfs first, so /init mounts it after
FSTAB = b"""\
proc /proc proc defaults 0 0
sysfs /sys sysfs defaults 0 0
devtmpfs /dev devtmpfs defaults 0 0
cgroup2 /sys/fs/cgroup cgroup2 defaults 0 0
"""

#: native programs of the userland packages shipped with their libraries: Debian rt-tests'
#: cyclictest, the standard latency measurement (the agent's ``cyclictest`` pkg)
EXTRA_PROGRAMS = ("usr/bin/cyclictest",)

#: busybox applets the init script and a debugging shell use (when listing fails).
FALLBACK_APPLETS = [
    "sh",
    "ash",
    "cat",
    "echo",
    "ls",
    "mkdir",
    "mount",
    "umount",
    "insmod",
    "ip",
    "udhcpc",
    "sleep",
    "poweroff",
    "reboot",
    "halt",
    "ps",
    "kill",
    "dmesg",
    "grep",
    "sed",
    "cut",
    "tr",
    "head",
    "tail",
    "sync",
    "uname",
    "cp",
    "mv",
    "rm",
    "ln",
    "chmod",
    "env",
    "true",
    "false",
    "test",
    "[",
    "printf",
    "hostname",
    "ifconfig",
    "route",
    "free",
    "top",
    "vi",
]

ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
    "etc/hostname": "farm-guest\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
}


@dataclass(frozen=True)
class InitrdSources:
    """Everything an initrd is made from (paths on the build host)."""

    rootfs: Path  # union of the extracted userland packages
    kernel: KernelFiles
    agent_dir: Path  # farm/agent of the host checkout
    init_template: Path
    udhcpc_script: Path
    allowlist: Path
    agent_version: str
    compression: str = "none"
    native: Path | None = None  # farm-workload, shipped at native.GUEST_PATH
    extra_info: dict[str, object] = field(default_factory=dict)


def busybox_applets(rootfs: Path) -> list[str]:
    """Applet paths (``bin/sh``, ``sbin/ip``, ...) of the packaged busybox."""
    busybox = rootfs / "bin" / "busybox"
    try:
        out = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot list busybox applets (%s); using a fixed list", exc)
        out = [f"bin/{a}" for a in FALLBACK_APPLETS]
    return sorted(set(out))


def render_init(template: Path, modules: list[str], kernel_release: str) -> bytes:
    """The /init script: the template with the module load order filled in."""
    text = template.read_text()
    for key, value in {
        "@FARM_MODULES@": " ".join(modules),
        "@KERNEL_RELEASE@": kernel_release,
    }.items():
        if key not in text:
            raise ImageError(f"init template {template} lacks placeholder {key}")
        text = text.replace(key, value)
    return text.encode()


def build_tree(src: InitrdSources, work: Path) -> tuple[Tree, dict[str, object]]:
    """The complete guest root file system and a summary of what is in it."""
    if not pyruntime.host_python_ok():
        raise ImageError("building the guest image needs an x86-64 Linux host")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    tree = Tree()
    for d in ("dev", "proc", "sys", "tmp", "run", "root", "mnt", "var/run"):
        tree.dir(d, 0o1777 if d == "tmp" else 0o755)
    tree.node("dev/console", stat.S_IFCHR, 5, 1)
    tree.node("dev/null", stat.S_IFCHR, 1, 3)
    for path, text in ETC_FILES.items():
        tree.file(path, text.encode())

    pyruntime.copy_path(tree, src.rootfs, "bin/busybox")
    applets = busybox_applets(src.rootfs)
    for applet in applets:
        if applet != "bin/busybox" and applet not in tree:
            tree.symlink(applet, "/bin/busybox")

    modules = module_load_order(src.kernel, GUEST_MODULES)
    moddir = PurePosixPath("lib/modules") / src.kernel.release
    for name, data in modules:
        tree.file(moddir / f"{name}.ko", data)

    for program in EXTRA_PROGRAMS:
        pyruntime.copy_path(tree, src.rootfs, program)
    pyruntime.add_libraries(tree, src.rootfs, [PurePosixPath(p) for p in EXTRA_PROGRAMS])
    copied = pyruntime.add_agent(tree, src.rootfs, src.agent_dir, work)
    allow = pyruntime.read_allowlist(src.allowlist)
    py = pyruntime.add_python(tree, src.rootfs, work / "agent", allow, work)

    init = render_init(src.init_template, [n for n, _ in modules], src.kernel.release)
    tree.file("init", init, 0o755)
    tree.file("etc/udhcpc.script", src.udhcpc_script.read_bytes(), 0o755)
    tree.file("etc/fstab", FSTAB)
    tree.file("etc/farm/agent_version", f"{src.agent_version}\n".encode())
    native_info: dict[str, object] | None = None
    if src.native is not None:
        data = src.native.read_bytes()
        tree.file(native.GUEST_PATH, data, 0o755)
        native_info = {
            "path": native.GUEST_PATH,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
    summary: dict[str, object] = {
        "agent_version": src.agent_version,
        "agent_files": copied,
        "kernel_release": src.kernel.release,
        "modules": [n for n, _ in modules],
        "busybox_applets": len(applets),
        "python": py,
        "native": native_info,
        **src.extra_info,
    }
    tree.file(
        "etc/farm/image.json", (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode()
    )
    return tree, summary


def build_initrd(src: InitrdSources, work: Path, out: Path) -> dict[str, object]:
    """Write the compressed initramfs to ``out``; return the summary."""
    tree, summary = build_tree(src, work)
    raw = tree.cpio()
    data = compress(raw, src.compression)
    summary = {**summary, "uncompressed_bytes": len(raw), "compression": src.compression}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    log.info(
        "initrd: %d files, %d bytes (%s of %d)",
        len(tree.entries),
        len(data),
        src.compression,
        len(raw),
    )
    return summary
