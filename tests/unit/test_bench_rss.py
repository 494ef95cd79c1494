"""bench/rss.py: which processes count for a guest, and the private-memory breakdown's kinds."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import psutil
import pytest

RSS = Path(__file__).resolve().parents[2] / "bench" / "rss.py"


@pytest.fixture(scope="module")
def rss() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_rss", RSS)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_rss"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_a_guests_screen_counts_with_its_qemu(rss: ModuleType, tmp_path: Path) -> None:
    """The screen session farm runs each QEMU in is one of the guest's processes."""
    sh = shutil.which("sh")
    assert sh is not None
    screen = tmp_path / "screen"  # a shell under screen's name, its child stands for QEMU
    shutil.copy(sh, screen)
    proc = subprocess.Popen([str(screen), "-c", "sleep 30; true"])
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 10
        while not (children := psutil.Process(proc.pid).children()):
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.01)
        assert rss.helpers(children[0].pid) == [proc.pid]
        assert rss.helpers(os.getpid()) == []  # not under screen
    finally:
        proc.kill()
        proc.wait()
        for child in children:
            child.kill()


def test_private_breakdown_names_every_kind(rss: ModuleType) -> None:
    kinds = rss.private_breakdown(os.getpid())
    assert set(kinds) == {"tcg_tb", "ram_cow", "heap", "anon", "files"}
    assert all(isinstance(v, float) and v >= 0 for v in kinds.values())


def test_translations_reads_info_jit(rss: ModuleType) -> None:
    """The last guest's TCG block and flush counts come from HMP ``info jit``; {} without TCG."""
    from farm.qemu.qmp import QmpError

    text = "Translation buffer state:\nTB count            31922\nTB avg target size  18\n"
    text += "TB flush count      1\nTB invalidate count 0\n"

    class Qmp:
        def __init__(self, reply: str | None) -> None:
            self.reply, self.asked = reply, ""

        def execute(self, cmd: str, **args: str) -> str:
            self.asked = f"{cmd} {args['command-line']}"
            if self.reply is None:
                raise QmpError("no TCG")
            return self.reply

    class Guest:
        def __init__(self, qmp: Qmp | None) -> None:
            self.process = type("P", (), {"qmp": qmp})()

    qmp = Qmp(text)
    assert rss.translations(Guest(qmp)) == {"blocks": 31922, "flushes": 1}
    assert qmp.asked == "human-monitor-command info jit"
    assert rss.translations(Guest(Qmp(None))) == {}
    assert rss.translations(Guest(None)) == {}
