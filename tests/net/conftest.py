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
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def warm_scenario_prelude(backend: str, state: str, boots: int) -> str:
    """The start of a bridged warm-start scenario script (argv: scratch dir, image dir,
    IPs): imports, ``config(log_subdir)`` for ``backend`` with its state in ``state``,
    ``hello`` (a handshake, retried while a cold guest is not listening yet), ``neigh``
    (the host's neighbour entry for an address on br0) and an empty ``report``."""
    return f"""
import json, os, socket, subprocess, sys, time
from pathlib import Path
from farm.agent.protocol import client_handshake
from farm.config import FarmConfig

base, images, ips = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
def config(sub):
    return FarmConfig(
        backend={backend!r}, network="bridge", warm_start=True, state_dir=base / {state!r},
        log_dir=base / sub, image_dir=images, idle_linger=30.0, boot_timeout=150.0,
        max_concurrent_boots={boots}, profile={{"accel": "tcg", "memory": 256}},
    )
def hello(host, port, token):
    deadline = time.monotonic() + 150
    while True:
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                return client_handshake(sock, token).hello
        except PermissionError:
            raise
        except OSError:  # a cold guest: not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
def neigh(host):
    return subprocess.run(["ip", "neigh", "show", host, "dev", "br0"],
                          capture_output=True, text=True).stdout
report = {{"guests": {{}}}}
"""


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

    def scenario(
        self, script: str, image: ImageInfo, ips: list[str], *, timeout: float, code: int = 0
    ) -> tuple[dict[str, Any], dict[str, str], str]:
        """Run a scenario script (argv: scratch dir, image dir, IPs) whose last stdout line is
        its JSON report; check its exit status. Returns (report, consoles by ``logdir/file``,
        the failure context: stderr and each console's tail)."""
        result = self.python(
            script, str(self.dir), str(image.kernel.parent), ",".join(ips), timeout=timeout
        )
        consoles = {
            f"{p.parent.name}/{p.name}": p.read_text(errors="replace")
            for p in sorted(self.dir.glob("log*/*.console.log"))
        }
        context = f"stderr:\n{result.stderr[-3000:]}\nconsoles:\n" + "\n".join(
            f"--- {k}\n{v[-1200:]}" for k, v in consoles.items()
        )
        assert result.returncode == code, context
        return json.loads(result.stdout.strip().splitlines()[-1]), consoles, context


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
        # a process still in its exit path (cmdline already empty) is not a stray: give
        # the farm's last children a moment to finish exiting before judging
        _, leftovers = psutil.wait_procs(ns_processes(name), timeout=2)
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


# -- several namespaces wired together (existing-targets scenarios) ------------------------


def _popen_in(
    name: str, argv: list[str], *, cwd: Path, log: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log or os.devnull, "ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", name, *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg() ends it and its jobs
        )


def popen_in(ns: NetNs, argv: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the background inside ``ns`` (own session; output to ``log``).

    ``ip netns exec`` execs the command, so the Popen's pid is the command itself.
    """
    return _popen_in(ns.name, argv, cwd=ns.dir, log=log)


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


def _delete_namespace(name: str, scratch: Path) -> list[str]:
    """Kill what runs in ``name``, delete it and its scratch dir; return what was left running."""
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
    return report


class NetLab:
    """Several ``farmtest-XXXX`` namespaces of one test, wired with veth pairs.

    Every link is created from inside a test namespace (``ip -n NS link add ...
    peer ... netns OTHER``), so no interface ever appears in the machine's own
    namespace. ``close()`` (the ``netlab`` fixture calls it) kills every
    process left in the namespaces, deletes them and reports leftovers.
    """

    def __init__(self) -> None:
        self.namespaces: list[NetNs] = []

    def add(self) -> NetNs:
        """A new namespace with loopback up."""
        name = f"farmtest-{uuid.uuid4().hex[:8]}"
        scratch = Path(tempfile.mkdtemp(prefix="farmnet"))
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
        ns = NetNs(name, scratch)
        self.namespaces.append(ns)
        _ip("-n", name, "link", "set", "lo", "up")
        return ns

    def bridge(self, ns: NetNs, name: str, address: str) -> None:
        """A Linux bridge ``name`` inside ``ns`` with ``address`` (CIDR), up."""
        _ip("-n", ns.name, "link", "add", name, "type", "bridge")
        _ip("-n", ns.name, "addr", "add", address, "dev", name)
        _ip("-n", ns.name, "link", "set", name, "up")

    def veth(self, bridge_ns: NetNs, bridge: str, port: str, host_ns: NetNs, address: str) -> None:
        """Connect ``host_ns`` (its ``eth0`` gets ``address``) to ``bridge`` in ``bridge_ns``."""
        _ip("-n", bridge_ns.name, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", host_ns.name)  # fmt: skip
        _ip("-n", bridge_ns.name, "link", "set", port, "master", bridge, "up")
        _ip("-n", host_ns.name, "addr", "add", address, "dev", "eth0")
        _ip("-n", host_ns.name, "link", "set", "eth0", "up")

    def close(self) -> list[str]:
        """Delete every namespace (newest first); return the processes that were left running."""
        report: list[str] = []
        for ns in reversed(self.namespaces):
            report += [f"{ns.name}: {line}" for line in _delete_namespace(ns.name, ns.dir)]
        return report


@pytest.fixture
def netlab() -> Iterator[NetLab]:
    """A :class:`NetLab`; all its namespaces are deleted and checked empty afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the net tier needs root (ip netns add)")
    if shutil.which("ip") is None:
        pytest.fail("iproute2 (ip) is not installed")
    lab = NetLab()
    try:
        yield lab
    finally:
        report = lab.close()
        gone = [ns.name for ns in lab.namespaces if _ns_inode(ns.name) is not None]
        assert gone == [], f"namespaces still exist: {gone}"
        assert report == [], f"processes left running: {report}"
