"""The KVM probe is bounded: a hanging QEMU costs at most its timeout, and TCG is chosen."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import psutil
import pytest

from farm import accel
from farm.errors import ConfigError
from farm.image.elf import Elf, pvh_entry


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    accel.clear_cache()
    real_access = os.access
    monkeypatch.setattr(
        accel.os, "access", lambda p, m: True if p == "/dev/kvm" else real_access(p, m)
    )


def fake_qemu(tmp_path: Path, body: str) -> Path:
    """A script named like the x86 QEMU binary; it logs each call to calls.log."""
    path = tmp_path / "bin" / "qemu-system-x86_64"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls.log\n{body}\n')
    path.chmod(0o755)
    return path


def no_process_left(marker: Path) -> bool:
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if str(marker) in cmdline and proc.status() != psutil.STATUS_ZOMBIE:
                return False
    return True


def test_hanging_qemu_times_out_is_killed_and_gives_tcg(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    qemu = fake_qemu(tmp_path, f"exec sleep 1000 # {tmp_path}")
    caplog.set_level(logging.INFO, logger="farm.accel")
    assert accel.resolve_accel("auto", str(qemu), timeout=0.3) == "tcg"
    assert accel.resolve_accel("auto", str(qemu), timeout=0.3) == "tcg"  # cached
    assert (tmp_path / "calls.log").read_text().count("-accel kvm") == 1
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "did not finish within 0.3 s" in caplog.records[0].getMessage()
    assert no_process_left(tmp_path)


def test_hanging_child_of_qemu_is_killed_too(tmp_path: Path) -> None:
    qemu = fake_qemu(tmp_path, f"sleep 1000 & sleep 1000 # {tmp_path}")
    ok, reason = accel.probe_kvm(str(qemu), timeout=0.3)
    assert not ok and "did not finish" in reason
    assert no_process_left(tmp_path)


def test_probe_guest_that_exits_properly_means_kvm(tmp_path: Path) -> None:
    qemu = fake_qemu(tmp_path, f"exit {accel.PROBE_OK_STATUS}")
    assert accel.probe_kvm(str(qemu), timeout=5) == (True, "KVM test guest ran")
    assert accel.resolve_accel("auto", str(qemu), timeout=5) == "kvm"


def test_kernel_stage_needs_the_linux_banner(tmp_path: Path) -> None:
    script = (
        f'case "$*" in *probe.elf*) exit {accel.PROBE_OK_STATUS} ;; esac\n'
        "echo 'Linux version 6.1'; exec sleep 1000"
    )
    qemu = fake_qemu(tmp_path, script)
    ok, reason = accel.probe_kvm(str(qemu), timeout=5, kernel=tmp_path / "vmlinux")
    assert ok and "started" in reason
    assert no_process_left(tmp_path)
    silent = fake_qemu(tmp_path, script.replace("echo 'Linux version 6.1'; ", ""))
    ok, reason = accel.probe_kvm(str(silent), timeout=0.3, kernel=tmp_path / "vmlinux")
    assert not ok and "printed nothing" in reason


def test_failing_qemu_and_foreign_arch_give_tcg(tmp_path: Path) -> None:
    qemu = fake_qemu(tmp_path, "echo 'Could not access KVM kernel module' >&2; exit 1")
    ok, reason = accel.probe_kvm(str(qemu), timeout=5)
    assert not ok and "status 1" in reason
    assert accel.probe_kvm("qemu-system-arm")[0] is False


def test_explicit_accel_is_not_probed_and_bad_accel_is_refused(tmp_path: Path) -> None:
    qemu = fake_qemu(tmp_path, "exit 1")
    assert accel.resolve_accel("tcg", str(qemu)) == "tcg"
    assert accel.resolve_accel("kvm", str(qemu)) == "kvm"
    assert not (tmp_path / "calls.log").exists()
    with pytest.raises(ConfigError, match="accel"):
        accel.resolve_accel("xen", str(qemu))


def test_probe_payload_is_a_pvh_elf() -> None:
    assert pvh_entry(Elf(accel.probe_payload())) == 0x100000
