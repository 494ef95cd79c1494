"""net-tier fixtures: a private network namespace per test, and the guest image.

Everything bridged (bridge, taps, dhcpd, QEMU guests) runs inside a namespace
``farmtest-XXXX`` created here: the farm process itself is started with
``ip netns exec NS python ...``, so it never sees the machine's real
interfaces. On teardown every process inside the namespace is killed
(SIGTERM, then SIGKILL), the namespace is deleted, and the test fails if any
process of it (dhcpd, QEMU, screen, the farm script) is still running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from farm.image import ImageInfo, build

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@pytest.fixture(scope="session")
def image() -> ImageInfo:
    """images/image.elf + initrd.img, built (or reused from the cache) once per test session."""
    return build(out_dir=REPO / "images")


def _ns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def ns_processes(name: str) -> list[psutil.Process]:
    """Live processes whose network namespace is ``name`` (compared by nsfs inode)."""
    inode = _ns_inode(name)
    if inode is None:
        return []
    found = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == inode:
                found.append(proc)
    return found


@dataclass
class NetNs:
    """A private network namespace and a short scratch directory for one test."""

    name: str
    dir: Path

    def run(
        self, argv: list[str], *, timeout: float, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace; output captured."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            cwd=cwd or self.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def python(self, script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a Python script (written to the scratch dir) inside the namespace."""
        path = self.dir / f"script-{uuid.uuid4().hex[:6]}.py"
        path.write_text(script)
        return self.run([PYTHON, str(path), *args], timeout=timeout)


@pytest.fixture
def netns() -> Iterator[NetNs]:
    """A fresh ``farmtest-XXXX`` namespace (loopback up); nothing in it survives the test."""
    if os.geteuid() != 0:
        pytest.fail("the net tier needs root (ip netns add)")
    if shutil.which("ip") is None:
        pytest.fail("iproute2 (ip) is not installed")
    name = f"farmtest-{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="farmnet"))
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
            timeout=10,
        )
        yield NetNs(name, scratch)
    finally:
        leftovers = ns_processes(name)
        report = []
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                report.append(f"{proc.pid}: {' '.join(proc.cmdline())[:200]}")
                proc.terminate()
        _, alive = psutil.wait_procs(leftovers, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)
        shutil.rmtree(scratch, ignore_errors=True)
        assert _ns_inode(name) is None, f"namespace {name} still exists"
        assert report == [], f"processes left running in {name}: {report}"
