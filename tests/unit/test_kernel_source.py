"""farm's own kernel build (farm.image.kernel_source) without compiling anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from farm.errors import ImageError
from farm.image import debs, kernel_source

pytestmark = pytest.mark.unit


def test_shipped_fragment_asks_for_what_the_guest_needs() -> None:
    options = kernel_source.fragment_options()
    for key in (
        "CONFIG_PREEMPT_RT",  # real-time task sets
        "CONFIG_PVH",  # QEMU boots the ELF vmlinux with -kernel
        "CONFIG_VIRTIO_NET",
        "CONFIG_VIRTIO_PCI",
        "CONFIG_VIRTIO_MMIO",
        "CONFIG_VIRTIO_CONSOLE",  # warm start's identity port
        "CONFIG_PCI_MSI",  # virtio-pci interrupts without ACPI's IRQ routing
        "CONFIG_SERIAL_8250_CONSOLE",
        "CONFIG_BLK_DEV_INITRD",
        "CONFIG_PACKET",  # udhcpc
        "CONFIG_IPV6",
    ):
        assert options.get(key) == "y", key
    # no virtual terminals (64 tty devices registered at boot), keyboard, mouse or PS/2
    # port: the console is serial; together 2.2 MB of kernel and ~2 M boot instructions
    for key in ("CONFIG_VT", "CONFIG_INPUT", "CONFIG_SERIO"):
        assert options.get(key) == "n", key
    for key in ("CONFIG_MODULES", "CONFIG_ACPI", "CONFIG_LEGACY_PTYS"):
        assert options.get(key) == "n", key
    # code nothing in the guest uses, translated at every boot under TCG: 4.6 M of the
    # 34 M kernel instructions before /init (boot_breakdown.py --icount), IPv6 itself kept
    for key in (
        "CONFIG_IPV6_SIT",
        "CONFIG_PPS",
        "CONFIG_PTP_1588_CLOCK",
        "CONFIG_VGA_ARB",
        "CONFIG_SLUB_DEBUG",
        "CONFIG_INET_DIAG",
    ):
        assert options.get(key) == "n", key


def test_fragment_parsing_and_errors(tmp_path: Path) -> None:
    frag = tmp_path / "f.config"
    frag.write_text("# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=64\n\n")
    assert kernel_source.fragment_options(frag) == {
        "CONFIG_A": "y",
        "CONFIG_B": "n",
        "CONFIG_C": "64",
    }
    frag.write_text("CONFIG_A=y\nA=y\n")
    with pytest.raises(ImageError, match=r"f\.config:2: not a config line"):
        kernel_source.fragment_options(frag)


def test_check_config_names_every_dropped_option(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=32\n")
    actual = kernel_source.read_config(config)
    kernel_source.check_config({"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_D": "n"}, actual)
    with pytest.raises(ImageError, match=r"CONFIG_B=y \(got n\), CONFIG_C=64 \(got 32\)"):
        kernel_source.check_config({"CONFIG_B": "y", "CONFIG_C": "64"}, actual)


def test_source_package_is_the_newest_with_mainline_rt(monkeypatch: pytest.MonkeyPatch) -> None:
    names = (
        "linux-source-6.1\nlinux-source-6.12\nlinux-source-6.9\nlinux-source-6.16\nlinux-source\n"
    )
    monkeypatch.setattr(debs, "run_apt", lambda argv, cwd=None: names)
    assert kernel_source.source_package() == "linux-source-6.16"
    monkeypatch.setattr(debs, "run_apt", lambda argv, cwd=None: "linux-source-6.1\n")
    with pytest.raises(ImageError, match=r">= 6\.12 .*have: linux-source-6\.1.*--kernel debian"):
        kernel_source.source_package()


def test_build_key_follows_fragment_patches_and_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = tmp_path / "kernel"
    shutil.copytree(kernel_source.RECIPE, recipe)
    monkeypatch.setattr(kernel_source, "RECIPE", recipe)
    monkeypatch.setattr(kernel_source, "FRAGMENT", recipe / "farm.config")
    monkeypatch.setattr(kernel_source, "compiler_id", lambda: "gcc 12")
    deb = debs.Deb("linux-source-6.12", "6.12.1-1", "all", "a" * 64)
    key = kernel_source.build_key(deb)
    assert kernel_source.build_key(deb) == key
    assert (
        kernel_source.build_key(debs.Deb("linux-source-6.12", "6.12.2-1", "all", "b" * 64)) != key
    )
    (recipe / "farm.config").write_text((recipe / "farm.config").read_text() + "CONFIG_X=y\n")
    key2 = kernel_source.build_key(deb)
    assert key2 != key
    (recipe / "zz-extra.patch").write_text("--- a/x\n+++ b/x\n")
    key3 = kernel_source.build_key(deb)
    assert key3 != key2
    monkeypatch.setattr(kernel_source, "compiler_id", lambda: "gcc 13")
    assert kernel_source.build_key(deb) != key3


def test_missing_build_tools_are_named_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel_source, "compiler_id", lambda: "gcc 12")
    monkeypatch.setattr(
        kernel_source.shutil, "which", lambda tool: None if tool in ("bison", "flex") else tool
    )
    deb = debs.Deb("linux-source-6.12", "6.12.1-1", "all", "a" * 64)
    with pytest.raises(ImageError, match="needs bison, flex"):
        kernel_source.build_farm_kernel(deb, tmp_path / "x.deb", tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_cached_build_is_reused_without_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel_source, "compiler_id", lambda: "gcc 12")
    monkeypatch.setattr(kernel_source.shutil, "which", lambda tool: None)
    deb = debs.Deb("linux-source-6.12", "6.12.1-1", "all", "a" * 64)
    root = tmp_path / kernel_source.build_key(deb)
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinux-6.12.1-farm").write_bytes(b"\x7fELF")
    (root / ".complete").touch()
    files = kernel_source.build_farm_kernel(deb, tmp_path / "x.deb", tmp_path)
    assert files.release == "6.12.1-farm" and files.builtin_only
    assert files.vmlinuz == root / "boot" / "vmlinux-6.12.1-farm"


def test_shipped_patches_are_unified_diffs_against_a_b_paths() -> None:
    found = kernel_source.patches()
    assert found, "farm/image/kernel/*.patch missing"
    for patch in found:
        text = patch.read_text()
        assert text.startswith("--- a/") and "\n+++ b/" in text, patch.name
