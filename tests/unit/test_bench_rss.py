"""bench/rss.py: the processes of a guest, its private-memory breakdown, its TCG figures."""

from __future__ import annotations

import contextlib
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

    text = "Translation buffer state:\r\ngen code size       23180979/1073736704\r\n"
    text += "TB count            31922\r\nTB avg target size  18\r\n"
    text += "TB flush count      1\r\nTB invalidate count 0\r\n"  # HMP's line ends

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
    assert rss.translations(Guest(qmp)) == {"blocks": 31922, "flushes": 1, "code_mib": 22.1}
    assert qmp.asked == "human-monitor-command info jit"
    assert rss.translations(Guest(Qmp(None))) == {}
    assert rss.translations(Guest(None)) == {}


def test_no_warm_up_skips_only_the_warm_up(
    rss: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--no-warm-up``: a restored guest is sent its identity without the warm-up request."""
    from farm.backend import snapshot

    sent: list[str] = []
    monkeypatch.setattr(snapshot, "warm_up_guest", lambda *a: sent.append("warm_up"))
    monkeypatch.setattr(snapshot, "_send_identity", lambda *a: sent.append("identity"))
    monkeypatch.setattr(snapshot, "resume", lambda *a: sent.append("resume"))
    monkeypatch.setattr(snapshot, "_connect", lambda *a: contextlib.nullcontext(None))
    snap = snapshot.Snapshot  # only passed through to the patched resume
    snapshot.restore(snap, Path("run"), "qemu1", "tok", lambda: True, warm_up=True)  # type: ignore[arg-type]
    assert sent == ["resume", "warm_up", "identity"]
    sent.clear()
    assert rss.skip_warm_up()
    snapshot.restore(snap, Path("run"), "qemu1", "tok", lambda: True, warm_up=True)  # type: ignore[arg-type]
    assert sent == ["resume", "identity"]
