"""bench/boot_breakdown.py: ranking initcalls and console gaps from a verbose boot log."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "boot_breakdown.py"

LOG = """\
[    0.000000] Linux version 6.1.0-56-rt-amd64
[    0.220191] x86/fpu: x87 FPU will use FXSAVE
[    0.431582] Freeing SMP alternatives memory: 36K
[    0.700000] calling  acpi_init+0x0/0x2d2 @ 1
[    0.840000] initcall acpi_init+0x0/0x2d2 returned 0 after 140000 usecs
[    0.840100] calling  virtio_net_driver_init+0x0/0x1000 [virtio_net] @ 1
[    0.856600] initcall virtio_net_driver_init+0x0/0x1000 [virtio_net] returned 0 after 16500 usecs
[    0.900000] initcall microcode_init+0x0/0x1d7 returned -22 after 26 usecs
garbage line without a stamp
[    1.131164] Trying to unpack rootfs image as initramfs...
[    1.426012] Freeing initrd memory: 15892K
[    1.731700] Run /init as init process
"""


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("boot_breakdown", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("boot_breakdown", mod)
    spec.loader.exec_module(mod)
    return mod


def test_parse_ranks_initcalls_and_gaps_and_finds_milestones() -> None:
    doc = _module().parse(LOG.splitlines(), top=2)
    assert doc["initcalls"] == 3
    assert doc["initcall_total_s"] == round(0.140 + 0.0165 + 0.000026, 4)
    assert [c["initcall"] for c in doc["initcalls_top"]] == ["acpi_init", "virtio_net_driver_init"]
    assert "returned" not in doc["initcalls_top"][0]  # 0 is not worth a field
    gaps = doc["gaps_top"]
    assert len(gaps) == 5 and [g["s"] for g in gaps] == sorted((g["s"] for g in gaps), reverse=True)
    assert gaps[0]["after"].startswith("Freeing initrd memory") and gaps[0]["s"] == 0.3057
    gaps = _module().parse(LOG.splitlines(), top=20)["gaps_top"]
    assert any(g["after"].startswith("x86/fpu") and g["s"] == 0.2114 for g in gaps)
    assert doc["milestones_s"] == {"initramfs_freed": 1.426, "run_init": 1.7317}
    assert doc["last_kernel_stamp_s"] == 1.7317


def test_debug_args_drop_what_hides_the_timing_lines() -> None:
    args = _module().debug_kernel_args("console=ttyS0 quiet loglevel=3 panic=-1")
    assert args.split() == [
        "console=ttyS0",
        "panic=-1",
        "printk.time=1",
        "initcall_debug",
        "ignore_loglevel",
    ]
