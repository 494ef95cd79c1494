"""Kernel side of the guest image: vmlinux with a PVH note, and the virtio modules.

The Debian kernel package ships a bzImage (``boot/vmlinuz-*``). QEMU boots an
ELF ``vmlinux`` directly with ``-kernel`` when it carries a PVH entry note,
which skips the real-mode setup code. Like the kernel's
``scripts/extract-vmlinux`` we look for each compression magic in the bzImage,
decompress from there, and keep the first result that is an ELF file.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import re
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from farm.errors import ImageError
from farm.image import debs
from farm.image.elf import Elf, modinfo, pvh_entry, trim_zero_tails

log = logging.getLogger(__name__)

#: Modules the guest needs for its NIC (virtio-net over PCI or MMIO); their
#: dependencies are added from each module's ``.modinfo``.
NET_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_mmio", "virtio_net")
#: What the initrd ships: the NIC's modules and the warm start's identity port
#: (virtio-serial, ``virtio_console``; see farm/backend/snapshot.py).
GUEST_MODULES: tuple[str, ...] = (*NET_MODULES, "virtio_console")

#: Which members of the kernel package we keep in the cache.
_KEEP = re.compile(
    r"boot/(vmlinuz|config)-.*"
    r"|(usr/)?lib/modules/[^/]+/(modules\.builtin(\.modinfo)?"
    r"|kernel/(drivers/virtio/.*|drivers/net/(virtio_net|net_failover)\.ko.*"
    r"|drivers/char/virtio_console\.ko.*"
    r"|net/core/failover\.ko.*))"
)


def _tool(argv: list[str]) -> Callable[[bytes], bytes]:
    def run(data: bytes) -> bytes:
        proc = subprocess.run(argv, input=data, capture_output=True, timeout=120, check=False)
        return proc.stdout  # tolerates trailing garbage: partial output is checked for ELF

    return run


def _xz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _lzma(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)


def _gzip(data: bytes) -> bytes:
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


def _bzip2(data: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(data)


#: (name, magic, decompressor) in the order scripts/extract-vmlinux tries them.
COMPRESSIONS: tuple[tuple[str, bytes, Callable[[bytes], bytes]], ...] = (
    ("gzip", b"\x1f\x8b\x08", _gzip),
    ("xz", b"\xfd7zXZ\x00", _xz),
    ("bzip2", b"BZh", _bzip2),
    ("lzma", b"\x5d\x00\x00\x00", _lzma),
    ("lzo", b"\x89LZO", _tool(["lzop", "-dc"])),
    ("lz4", b"\x02\x21\x4c\x18", _tool(["lz4", "-dc"])),
    ("zstd", b"\x28\xb5\x2f\xfd", _tool(["zstd", "-dc"])),
)


def extract_vmlinux(bzimage: bytes, what: str = "bzImage") -> tuple[bytes, str]:
    """Return (vmlinux ELF bytes, compression name) found inside a bzImage."""
    if bzimage.startswith(b"\x7fELF"):
        return bzimage, "none"
    tried = []
    for name, magic, decompress in COMPRESSIONS:
        pos = bzimage.find(magic)
        while pos >= 0:
            try:
                out = decompress(bzimage[pos:])
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
                log.debug("%s at %d: %s", name, pos, exc)
                out = b""
            if out.startswith(b"\x7fELF"):
                return out, name
            tried.append(f"{name}@{pos}")
            pos = bzimage.find(magic, pos + 1)
            if len(tried) > 64:
                break
    raise ImageError(
        f"{what}: no compressed ELF vmlinux found (tried {', '.join(tried) or 'no magic found'})"
    )


def check_pvh(vmlinux: bytes, what: str = "vmlinux") -> int:
    """Entry point from the PVH note; ImageError if QEMU could not boot it with -kernel."""
    entry = pvh_entry(Elf(vmlinux, what))
    if entry is None:
        raise ImageError(
            f"{what} has no PVH note (XEN_ELFNOTE_PHYS32_ENTRY); QEMU cannot boot it "
            "as an ELF with -kernel (kernel built without CONFIG_PVH?)"
        )
    return entry


@dataclass(frozen=True)
class KernelFiles:
    """What the build keeps from the kernel package (extracted once per version)."""

    root: Path
    release: str  # uname -r, e.g. 6.1.0-56-rt-amd64
    #: farm's own kernel (farm.image.kernel_source): every driver built in, no modules
    builtin_only: bool = False

    @property
    def vmlinuz(self) -> Path:
        """The kernel image: the package's bzImage, or farm's own ELF vmlinux."""
        if self.builtin_only:
            return self.root / "boot" / f"vmlinux-{self.release}"
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def config(self) -> Path:
        return self.root / "boot" / f"config-{self.release}"

    @property
    def modules_dir(self) -> Path:
        for base in ("lib", "usr/lib"):
            path = self.root / base / "modules" / self.release
            if path.is_dir():
                return path
        raise ImageError(f"kernel package has no modules dir for {self.release} in {self.root}")


def unpack_kernel(deb: Path, cache: Path) -> KernelFiles:
    """Extract bzImage, config and the NIC modules of a kernel package (cached)."""
    root = cache / deb.name.removesuffix(".deb")
    marker = root / f".complete-{zlib.crc32(_KEEP.pattern.encode()):08x}"  # re-extract: new _KEEP
    if not marker.exists():
        log.info("unpacking %s", deb.name)
        root.mkdir(parents=True, exist_ok=True)
        debs.extract(deb, root, lambda p: bool(_KEEP.fullmatch(str(p))))
        marker.touch()
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if not images:
        raise ImageError(f"{deb.name} ships no boot/vmlinuz-*")
    return KernelFiles(root, images[0].name.removeprefix("vmlinuz-"))


def _module_files(modules_dir: Path) -> dict[str, Path]:
    found = {}
    for path in sorted((modules_dir / "kernel").rglob("*.ko*")):
        name = path.name.split(".ko")[0].replace("-", "_")
        found[name] = path
    return found


def read_module(path: Path) -> bytes:
    """A module's ELF bytes, decompressing ``.ko.xz`` / ``.ko.gz`` / ``.ko.zst``."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return _tool(["zstd", "-dc"])(data)
    return data


def module_load_order(
    files: KernelFiles, roots: tuple[str, ...] = NET_MODULES
) -> list[tuple[str, bytes]]:
    """(name, .ko bytes) of ``roots`` and their dependencies, dependencies first.

    Built-in drivers (``modules.builtin``) are skipped; a root that is neither a
    module nor built in raises ImageError. farm's own kernel has no modules at all
    (its build checked that the drivers are built in).
    """
    if files.builtin_only:
        return []
    builtin_file = files.modules_dir / "modules.builtin"
    builtin = set()
    if builtin_file.exists():
        builtin = {
            PurePosixPath(line).name.split(".ko")[0].replace("-", "_")
            for line in builtin_file.read_text().split()
        }
    available = _module_files(files.modules_dir)
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        if name in chain:
            raise ImageError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        path = available.get(name)
        if path is None:
            raise ImageError(
                f"kernel {files.release}: module {name} (needed by "
                f"{chain[-1] if chain else 'the image'}) is neither built in nor shipped"
            )
        data = read_module(path)
        depends = modinfo(data, path.name).get("depends", "")
        for dep in filter(None, depends.split(",")):
            visit(dep, (*chain, name))
        seen.add(name)
        order.append((name, data))

    for root in roots:
        visit(root, ())
    return order


def build_kernel(deb: Path, cache: Path, out: Path) -> KernelFiles:
    """Write the PVH-bootable vmlinux of a kernel package to ``out``."""
    files = unpack_kernel(deb, cache)
    write_vmlinux(files, out)
    return files


def write_vmlinux(files: KernelFiles, out: Path) -> None:
    """Write the kernel's PVH-bootable ELF vmlinux, without its zero tails, to ``out``."""
    vmlinux, how = extract_vmlinux(files.vmlinuz.read_bytes(), files.vmlinuz.name)
    entry = check_pvh(vmlinux, f"vmlinux of {files.vmlinuz.name}")
    size = len(vmlinux)
    vmlinux = trim_zero_tails(vmlinux, "vmlinux")
    check_pvh(vmlinux, "trimmed vmlinux")
    log.info(
        "kernel %s: %s vmlinux, PVH entry %#x, %d bytes (%d without zero tails)",
        files.release, how, entry, size, len(vmlinux),
    )  # fmt: skip
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(vmlinux)
    tmp.replace(out)
