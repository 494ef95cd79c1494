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


IMPORTS = """\
import time: self [us] | cumulative | imported package
import time:      3265 |       3265 |   _io
import time:     42011 |      61250 | _frozen_importlib_external
farm-init: listening on port 3001 (the agent loads)
import time:     44173 |      44173 |     _collections_abc
import time:     18798 |      71774 |   os
import time:     13089 |      84863 | farm.agent.__main__
"""


def test_importtime_lines_ranked_by_own_time() -> None:
    doc = _module().parse_importtime(IMPORTS.splitlines(), top=2)
    assert doc["modules"] == 5
    assert doc["self_total_s"] == round((3265 + 42011 + 44173 + 18798 + 13089) / 1e6, 4)
    assert doc["top_level_s"] == {
        "_frozen_importlib_external": 0.0612,
        "farm.agent.__main__": 0.0849,
    }
    assert [m["module"] for m in doc["slowest_self"]] == [
        "_collections_abc",
        "_frozen_importlib_external",
    ]


def test_first_sets_compares_the_first_start_with_the_later_ones() -> None:
    import socket
    import threading

    from farm.agent.protocol import read_frame, write_frame

    host, agent = socket.socketpair()
    clock = iter(range(100))

    def fake_agent() -> None:  # set k: START 0.5 s after t0 for the first set, 0.1 s later on
        for k in range(3):
            request = read_frame(agent)
            t0 = float(next(clock))
            write_frame(
                agent, {"type": "reply", "id": request["id"], "ok": True, "result": {"t0": t0}}
            )
            start = t0 + (0.5 if k == 0 else 0.1)
            for kind in ("START", "JOBS_DONE"):
                write_frame(agent, {"type": "event", "event": {"type": kind, "ts": start}})

    class Plain:  # the Channel interface first_sets uses, without the MAC
        sock = host

        def send(self, message: dict[str, object]) -> None:
            write_frame(host, message)

        def recv(self) -> dict[str, object]:
            return read_frame(host)

    thread = threading.Thread(target=fake_agent, daemon=True)
    thread.start()
    try:
        doc = _module().first_sets(Plain(), 3, timeout=30)
    finally:
        thread.join(30)
        host.close()
        agent.close()
    assert doc["agent_t0_to_START_s"] == [0.5, 0.1, 0.1]
    assert doc["agent_first_minus_later_median_s"] == 0.4
    assert len(doc["host_start_to_START_s"]) == 3
