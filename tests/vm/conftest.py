"""vm-tier fixtures: the guest image (built once per session, cached) and guest boots."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from farm.image import ImageInfo, build
from farm.image.smoke import Guest, boot
from farm.profile import MachineProfile, default_profile

REPO = Path(__file__).resolve().parents[2]
#: generous: TCG boots take seconds, and a busy CI host makes them slower
BOOT_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def image() -> ImageInfo:
    """images/image.elf + initrd.img, built (or reused from the cache) once per test session."""
    return build(out_dir=REPO / "images")


@pytest.fixture(scope="session")
def profile(image: ImageInfo) -> MachineProfile:
    """The default profile booting the built image, under TCG (no KVM probe in tests)."""
    return MachineProfile.from_dict(
        {**default_profile(image.kernel.parent).to_dict(), "accel": "tcg"}
    )


def qemu_processes(marker: str) -> list[psutil.Process]:
    """Live QEMU processes whose command line contains ``marker``."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if (
                "qemu-system" in cmdline
                and marker in cmdline
                and proc.info["status"] != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
    return found


GuestFactory = Callable[..., contextlib.AbstractContextManager[Guest]]


@pytest.fixture
def guest_factory(tmp_path: Path) -> Iterator[GuestFactory]:
    """``with guest_factory(profile, token) as g:`` boots a guest; none may outlive the test."""
    marker = f"farmtest-{uuid.uuid4().hex[:8]}"
    count = 0

    @contextlib.contextmanager
    def start(profile: MachineProfile, token: str | None, **kw: Any) -> Iterator[Guest]:
        nonlocal count
        count += 1
        with boot(profile, token, tmp_path, name=f"{marker}-{count}", **kw) as guest:
            yield guest

    try:
        yield start
    finally:
        leftovers = qemu_processes(marker)
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        assert leftovers == [], f"QEMU processes left running: {leftovers}"
