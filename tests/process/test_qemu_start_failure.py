"""qemu backend: a QEMU that never starts gives a clear error and leaves no screen behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
import pytest

from farm.backend.qemu import QemuBackend
from farm.config import FarmConfig
from farm.errors import BackendError
from farm.profile import load_profile


def screens_named(name: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if "screen" in (p.info["name"] or "").lower() and name in (p.info["cmdline"] or []):
            out.append(p)
    return out


def test_qemu_that_never_starts_is_reported_and_cleaned(tmp_path: Path) -> None:
    fake = tmp_path / "fake-qemu"
    fake.write_text("#!/bin/sh\necho 'fake qemu: cannot start' \nsleep 600\n")
    fake.chmod(0o755)
    kernel = tmp_path / "image.elf"
    kernel.write_bytes(b"\x7fELF")
    profile = load_profile({"qemu": str(fake), "kernel": str(kernel), "initrd": ""})
    cfg = FarmConfig(backend="qemu", state_dir=tmp_path / "state", log_dir=tmp_path / "log")
    # someone else's screen session with the same name must survive our cleanup
    other = subprocess.Popen(["screen", "-DmS", "qemu7", "sleep", "600"])
    try:
        backend = QemuBackend(cfg, profile)
        with pytest.raises(BackendError, match=r"(?s)qemu7: QEMU did not start.*fake-qemu"):
            backend.spawn("qemu7", "token")
        ours = [p for p in screens_named("qemu7") if str(tmp_path) in " ".join(p.cmdline())]
        assert ours == []
        assert other.poll() is None
    finally:
        other.terminate()
        other.wait(10)
