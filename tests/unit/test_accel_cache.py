"""The KVM probe cache: one key per (QEMU, kernel) probe, several entries on disk, one
of them shared by ``farm doctor`` and ``farm run`` (they no longer re-probe each other out)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm import accel, doctor
from farm.profile import MachineProfile


@pytest.fixture
def probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    monkeypatch.setenv("FARM_ACCEL_CACHE", str(tmp_path / "accel.json"))
    accel.clear_cache()
    calls: list[tuple[str, Any]] = []

    def probe(qemu: str, timeout: float, kernel: Path | None = None) -> tuple[bool, str]:
        calls.append((qemu, kernel))
        return False, "test: KVM hangs here"

    monkeypatch.setattr(accel, "probe_kvm", probe)
    yield calls
    accel.clear_cache()


def test_disk_cache_keeps_one_entry_per_probe(
    probes: list[tuple[str, Any]], tmp_path: Path
) -> None:
    kernel = tmp_path / "image.elf"
    kernel.write_bytes(b"x")
    assert accel.resolve_accel("auto", "qemu-system-x86_64") == "tcg"
    assert accel.resolve_accel("auto", "qemu-system-x86_64", kernel=kernel) == "tcg"
    assert len(probes) == 2
    accel.clear_cache()  # a new process: only the disk remembers
    accel.resolve_accel("auto", "qemu-system-x86_64")
    accel.resolve_accel("auto", "qemu-system-x86_64", kernel=kernel)
    assert len(probes) == 2  # both entries kept: neither probe was repeated


def test_doctor_and_run_share_one_probe(probes: list[tuple[str, Any]], tmp_path: Path) -> None:
    kernel = tmp_path / "image.elf"
    kernel.write_bytes(b"x")
    profile = MachineProfile(accel="auto", kernel=kernel)
    assert profile.resolved_accel() == "tcg"  # what farm run does
    check = doctor.check_kvm(profile)
    assert len(probes) == 1, probes  # the doctor reused run's probe (same QEMU and kernel)
    assert "KVM hangs here" in check.detail
