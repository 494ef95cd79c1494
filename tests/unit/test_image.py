"""Guest image build: ELF/PVH checks, vmlinux extraction, modules, cpio, manifest caching."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from farm.accel import probe_payload
from farm.errors import ImageError
from farm.image import builder as build_mod
from farm.image import debs, kernel, native
from farm.image.cpio import Tree, compress
from farm.image.elf import Elf, modinfo, pvh_entry
from farm.image.pyruntime import read_allowlist, source_imports

PVH_ELF = probe_payload()  # a tiny 32-bit ELF with a PVH entry note


def elf_with_section(name: str, data: bytes) -> bytes:
    """A minimal ELF64 object with one named section (besides the string table)."""
    shstr = b"\0" + name.encode() + b"\0.shstrtab\0"
    body_off = 64
    shstr_off = body_off + len(data)
    sh_off = (shstr_off + len(shstr) + 7) & ~7
    header = b"\x7fELF\x02\x01\x01" + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, sh_off, 0, 64, 56, 0, 64, 3, 2)
    null = bytes(64)
    sec = struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, body_off, len(data), 0, 0, 1, 0)
    strsec = struct.pack("<IIQQQQIIQQ", 2 + len(name), 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0)
    blob = header + data + shstr
    return blob + bytes(sh_off - len(blob)) + null + sec + strsec


# -- ELF, PVH note, vmlinux extraction ---------------------------------------------------


def test_pvh_note_found_and_missing() -> None:
    assert pvh_entry(Elf(PVH_ELF)) == 0x100000
    assert kernel.check_pvh(PVH_ELF) == 0x100000
    no_note = elf_with_section(".text", b"\x90" * 16)
    with pytest.raises(ImageError, match="no PVH note"):
        kernel.check_pvh(no_note)
    with pytest.raises(ImageError, match="not an ELF"):
        Elf(b"MZ\x90\x00" + bytes(60))


@pytest.mark.parametrize(
    "pack",
    [
        lambda d: gzip.compress(d, mtime=0),
        lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
        lambda d: lzma.compress(
            d, format=lzma.FORMAT_ALONE, filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 1 << 24}]
        ),
    ],
    ids=["gzip", "xz", "lzma"],
)
def test_extract_vmlinux_finds_the_compressed_elf(pack: Any) -> None:
    bzimage = b"MZ" + bytes(1000) + b"\x1f\x8b\x08 false gzip magic" + pack(PVH_ELF) + bytes(77)
    vmlinux, _how = kernel.extract_vmlinux(bzimage)
    assert vmlinux.startswith(PVH_ELF)


def test_extract_vmlinux_without_payload_is_a_clear_error() -> None:
    with pytest.raises(ImageError, match="no compressed ELF"):
        kernel.extract_vmlinux(b"MZ" + bytes(4096))


def test_modinfo_depends_and_load_order(tmp_path: Path) -> None:
    moddir = tmp_path / "lib/modules/6.1.0-test/kernel/drivers"
    moddir.mkdir(parents=True)
    mods = {
        "virtio_net": "virtio,net_failover",
        "net_failover": "failover",
        "failover": "",
        "virtio": "virtio_ring",
        "virtio_ring": "",
        "virtio_pci": "virtio,virtio_ring,virtio_pci_modern_dev",
        "virtio_pci_modern_dev": "",
    }
    for name, deps in mods.items():
        info = f"license=GPL\0depends={deps}\0name={name}\0".encode()
        data = elf_with_section(".modinfo", info)
        if name == "virtio_net":
            (moddir / f"{name}.ko.xz").write_bytes(lzma.compress(data))
        else:
            (moddir / f"{name}.ko").write_bytes(data)
    (tmp_path / "lib/modules/6.1.0-test/modules.builtin").write_text(
        "kernel/drivers/virtio/virtio_mmio.ko\n"
    )
    files = kernel.KernelFiles(tmp_path, "6.1.0-test")
    assert modinfo(elf_with_section(".modinfo", b"depends=a,b\0"))["depends"] == "a,b"
    order = [n for n, _ in kernel.module_load_order(files)]
    assert sorted(order) == sorted(mods)
    for name, deps in mods.items():
        for dep in filter(None, deps.split(",")):
            assert order.index(dep) < order.index(name), (dep, name)
    with pytest.raises(ImageError, match="e1000"):
        kernel.module_load_order(files, ("e1000",))


# -- cpio ---------------------------------------------------------------------------------


def parse_newc(blob: bytes) -> list[tuple[str, int, int, bytes]]:
    """(name, mode, mtime, data) of each member of a newc archive."""
    out, pos = [], 0
    while True:
        assert blob[pos : pos + 6] == b"070701"
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = blob[pos + 110 : pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        data = blob[pos : pos + filesize]
        pos = (pos + filesize + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out.append((name, fields[1], fields[5], data))


def test_cpio_is_sorted_fixed_and_reproducible() -> None:
    def make(order: list[str]) -> bytes:
        tree = Tree()
        for path in order:
            tree.file(path, path.encode(), 0o755)
        tree.symlink("bin/sh", "busybox")
        tree.node("dev/console", stat.S_IFCHR, 5, 1)
        return tree.cpio()

    a = make(["usr/bin/python3.11", "init", "bin/busybox"])
    b = make(["bin/busybox", "init", "usr/bin/python3.11"])
    assert a == b
    members = parse_newc(a)
    names = [m[0] for m in members]
    assert names == ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "init", "usr",
                     "usr/bin", "usr/bin/python3.11"]  # fmt: skip
    assert {m[2] for m in members} == {0}
    assert dict((m[0], m[3]) for m in members)["bin/sh"] == b"busybox"
    assert compress(a, "gzip") == compress(b, "gzip")
    assert gzip.decompress(compress(a, "gzip")) == a
    assert lzma.decompress(compress(a, "xz")) == a
    with pytest.raises(ImageError):
        compress(a, "rar")
    with pytest.raises(ImageError):
        Tree().file("../etc/passwd", b"")


# -- python runtime selection ------------------------------------------------------------


def test_source_imports_include_lazy_ones(tmp_path: Path) -> None:
    src = tmp_path / "a.py"
    src.write_text(
        "import os, json\nfrom x.y import z\ndef f():\n    import ctypes\nfrom . import q\n"
    )
    assert source_imports([src]) == {"os", "json", "x.y", "ctypes"}


def test_allowlist_file_parsing(tmp_path: Path) -> None:
    f = tmp_path / "mods.txt"
    f.write_text("# comment\njson  # why\n\n!_lzma !_bz2\n")
    assert read_allowlist(f) == ["json", "!_lzma", "!_bz2"]


def test_deb_file_name_escapes_the_epoch() -> None:
    deb = debs.Deb("busybox-static", "1:1.35.0-4", "amd64", "0" * 64)
    assert deb.filename == "busybox-static_1%3a1.35.0-4_amd64.deb"


def test_deb_extraction(tmp_path: Path) -> None:
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, body in (("./usr/bin/tool", b"#!/bin/sh\n"), ("./etc/x", b"x")):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(body), 0o755, 12345
            tar.addfile(info, io.BytesIO(body))
        link = tarfile.TarInfo("./lib64/ld.so")
        link.type, link.linkname = tarfile.SYMTYPE, "/lib/x86_64-linux-gnu/ld.so"
        tar.addfile(link)
        evil = tarfile.TarInfo("../evil")
        tar.addfile(evil, io.BytesIO(b""))

    def member(name: str, body: bytes) -> bytes:
        head = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
        return head + body + (b"\n" if len(body) % 2 else b"")

    deb = tmp_path / "t.deb"
    deb.write_bytes(
        b"!<arch>\n" + member("debian-binary", b"2.0\n") + member("data.tar.xz", data.getvalue())
    )
    out = tmp_path / "root"
    written = debs.extract(deb, out, lambda p: not str(p).startswith("etc"))
    assert sorted(map(str, written)) == ["lib64/ld.so", "usr/bin/tool"]
    assert (out / "usr/bin/tool").stat().st_mtime == 12345
    assert (out / "lib64/ld.so").readlink() == Path("/lib/x86_64-linux-gnu/ld.so")
    assert not (tmp_path / "evil").exists()


# -- manifest and caching ------------------------------------------------------------------


class FakeWorld:
    """Replaces apt, the kernel and initrd builders of farm.image.build with fakes."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.kernel_version = "6.1.1-1"
        self.calls: list[str] = []
        self.agent = tmp / "agent"
        self.agent.mkdir()
        (self.agent / "protocol.py").write_text("# agent v1\n")
        self.recipe = tmp / "recipe"
        self.recipe.mkdir()
        for name in ("init.sh.in", "udhcpc.script", "python-modules.txt"):
            (self.recipe / name).write_text(f"{name} v1\n")
        self.out = tmp / "images"
        monkeypatch.setattr(build_mod, "resolve_packages", self.resolve)
        monkeypatch.setattr(build_mod.debs, "fetch", self.fetch)
        monkeypatch.setattr(build_mod.debs, "extract_once", lambda deb, dest: dest)
        monkeypatch.setattr(build_mod, "build_kernel", self.build_kernel)
        monkeypatch.setattr(build_mod, "unpack_kernel", self.unpack_kernel)
        monkeypatch.setattr(build_mod, "build_initrd", self.build_initrd)
        monkeypatch.setattr(build_mod, "build_farm_kernel", self.build_farm_kernel)
        monkeypatch.setattr(build_mod, "write_vmlinux", self.write_vmlinux)
        monkeypatch.setattr(build_mod.kernel_source, "build_key", lambda deb: "key-" + deb.version)
        self.native_source = "v1"
        self.native_builds: list[str] = []
        self.initrd_native: list[Path | None] = []
        monkeypatch.setattr(build_mod.native, "build_native", self.build_native)

    def resolve(
        self, cache: Path, manifest: dict[str, Any], flavor: str = "farm"
    ) -> dict[str, debs.Deb]:
        name = "linux-source-6.12" if flavor == "farm" else "linux-image-x-rt"
        pkgs = {"kernel": debs.Deb(name, self.kernel_version, "amd64", "k" * 64)}
        for name in build_mod.USERLAND_PACKAGES:
            pkgs[name] = debs.Deb(name, "1.0", "amd64", "u" * 64)
        return pkgs

    def fetch(self, wanted: dict[str, debs.Deb], cache: Path) -> dict[str, Path]:
        return {k: cache / d.filename for k, d in wanted.items()}

    def unpack_kernel(self, deb: Path, cache: Path) -> kernel.KernelFiles:
        return kernel.KernelFiles(cache, "6.1.0-x-rt")

    def build_kernel(self, deb: Path, cache: Path, out: Path) -> kernel.KernelFiles:
        self.calls.append("kernel")
        out.write_bytes(b"ELF " + self.kernel_version.encode())
        return self.unpack_kernel(deb, cache)

    def build_farm_kernel(self, deb: debs.Deb, path: Path, cache: Path) -> kernel.KernelFiles:
        self.calls.append("farm-kernel")
        return kernel.KernelFiles(cache, "6.12.1-farm", builtin_only=True)

    def write_vmlinux(self, files: kernel.KernelFiles, out: Path) -> None:
        out.write_bytes(b"ELF farm " + self.kernel_version.encode())

    def build_native(self, cache: Path) -> tuple[Path, str]:
        out = cache / self.native_source / "farm-workload"
        if not out.is_file():  # cached like the real one: built once per source
            self.native_builds.append(self.native_source)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"\x7fELF " + self.native_source.encode())
        return out, "nkey-" + self.native_source

    def build_initrd(self, src: Any, work: Path, out: Path) -> dict[str, object]:
        self.calls.append("initrd")
        self.initrd_native.append(src.native)
        out.write_bytes(b"cpio " + src.agent_version.encode())
        return {"agent_version": src.agent_version}

    def build(self, **kw: Any) -> build_mod.ImageInfo:
        self.calls.clear()
        kw.setdefault("kernel", "debian")
        return build_mod.build(out_dir=self.out, recipe_dir=self.recipe, agent_dir=self.agent, **kw)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    return FakeWorld(tmp_path, monkeypatch)


def test_first_build_builds_both_second_build_nothing(world: FakeWorld) -> None:
    info = world.build()
    assert world.calls == ["kernel", "initrd"] and info.kernel_rebuilt and info.initrd_rebuilt
    assert info.kernel_size == info.kernel.stat().st_size
    info = world.build()
    assert world.calls == [] and not info.kernel_rebuilt and not info.initrd_rebuilt
    assert info.to_dict()["kernel"] == str(world.out / "image.elf")


def test_agent_change_rebuilds_initrd_only(world: FakeWorld) -> None:
    first = world.build()
    (world.agent / "server.py").write_text("# new module\n")
    info = world.build()
    assert world.calls == ["initrd"] and not info.kernel_rebuilt and info.initrd_rebuilt
    assert info.agent_version != first.agent_version


@pytest.mark.parametrize("name", ["init.sh.in", "udhcpc.script", "python-modules.txt"])
def test_recipe_change_rebuilds_initrd_only(world: FakeWorld, name: str) -> None:
    world.build()
    (world.recipe / name).write_text("changed\n")
    world.build()
    assert world.calls == ["initrd"]


def test_new_kernel_package_rebuilds_both(world: FakeWorld) -> None:
    world.build()
    world.kernel_version = "6.1.2-1"
    info = world.build()
    assert world.calls == ["kernel", "initrd"] and info.kernel_version == "6.1.2-1"


def test_farm_kernel_flavor_builds_from_source_and_switching_flavor_rebuilds(
    world: FakeWorld,
) -> None:
    info = world.build(kernel="farm")
    assert world.calls == ["farm-kernel", "initrd"]
    assert info.kernel_package == "linux-source-6.12" and info.kernel_release == "6.12.1-farm"
    manifest = json.loads(info.manifest.read_text())
    assert manifest["kernel"]["inputs"]["flavor"] == "farm"
    assert manifest["kernel"]["release"] == "6.12.1-farm"
    info = world.build(kernel="farm")  # up to date: neither the kernel build nor its cache
    assert world.calls == [] and info.kernel_release == "6.12.1-farm"
    world.build(kernel="debian")
    assert world.calls == ["kernel", "initrd"]  # another kernel, another release
    with pytest.raises(ImageError, match="unknown kernel flavor 'mine'"):
        world.build(kernel="mine")


def test_native_workloads_are_built_once_listed_and_shipped(world: FakeWorld) -> None:
    info = world.build()
    manifest = json.loads(info.manifest.read_text())
    assert manifest["native"]["guest_path"] == native.GUEST_PATH == "/opt/farm/bin/farm-workload"
    assert manifest["native"]["key"] == "nkey-v1"
    host_copy = world.out / manifest["native"]["host_copy"]
    assert info.native == host_copy and host_copy.read_bytes() == b"\x7fELF v1"
    assert manifest["native"]["output"]["size"] == host_copy.stat().st_size
    assert manifest["initrd"]["inputs"]["native_key"] == "nkey-v1"
    assert world.initrd_native == [world.out / "cache" / "native" / "v1" / "farm-workload"]
    world.build()  # cached: neither compiled again nor a new initrd
    assert world.native_builds == ["v1"] and world.calls == []


def test_native_source_change_rebuilds_initrd_only(world: FakeWorld) -> None:
    world.build()
    world.native_source = "v2"
    info = world.build()
    assert world.calls == ["initrd"] and world.native_builds == ["v1", "v2"]
    assert info.native is not None and info.native.read_bytes() == b"\x7fELF v2"


def test_missing_or_altered_output_is_rebuilt(world: FakeWorld) -> None:
    world.build()
    (world.out / "image.elf").unlink()
    world.build()
    assert world.calls == ["kernel"]
    initrd = world.out / "initrd.img"
    initrd.write_bytes(bytes(len(initrd.read_bytes())))  # same size, other bytes
    world.build()
    assert world.calls == ["initrd"]


def test_force_and_compression_change(world: FakeWorld) -> None:
    world.build()
    world.build(force=True)
    assert world.calls == ["kernel", "initrd"]
    world.build(compression="xz")
    assert world.calls == ["initrd"]


def test_missing_recipe_or_agent_is_an_image_error(world: FakeWorld) -> None:
    (world.recipe / "udhcpc.script").unlink()
    with pytest.raises(ImageError, match=r"udhcpc\.script"):
        world.build()
    (world.agent / "protocol.py").unlink()
    with pytest.raises(ImageError, match="no agent"):
        world.build()


def test_manifest_needs_rebuild_reasons(tmp_path: Path) -> None:
    out = tmp_path / "x"
    assert build_mod.needs_rebuild("kernel", {}, {}, out) == "no previous build"
    manifest = {"kernel": {"inputs": {"a": 1}, "output": {}}}
    assert build_mod.needs_rebuild("kernel", {"a": 1}, manifest, out) == "x missing"
    out.write_bytes(b"1")
    assert "a" in build_mod.needs_rebuild("kernel", {"a": 2}, manifest, out)
