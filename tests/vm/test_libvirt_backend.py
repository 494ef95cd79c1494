"""libvirt backend against the real embedded driver and real QEMU (TCG here).

libvirt allows one embedded root per process, so every test of this module
shares one state dir (module fixture) and one backend; tests that need a
fresh farm run it in a child process. The guest image and the TCG profile
come from tests/vm/conftest.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import psutil
import pytest

from farm.agent.protocol import client_handshake
from farm.backend.libvirt import LibvirtBackend, LibvirtGuest, destroy_domain
from farm.backend.libvirt_xml import DomainSpec, domain_xml
from farm.config import FarmConfig
from farm.errors import BackendError, ConfigError
from farm.profile import MachineProfile

BOOT_TIMEOUT = 150.0  # s from spawn to agent handshake (TCG on a busy 2-core host)
TOKEN = "libvirt-test-token"
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def config() -> Iterator[FarmConfig]:
    """A farm in a short temporary dir (the embedded driver's UNIX socket paths are limited)."""
    base = Path(tempfile.mkdtemp(prefix="farm-lv-"))
    try:
        yield FarmConfig(state_dir=base / "state", log_dir=base / "log", warm_start=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def backend(config: FarmConfig, profile: MachineProfile) -> Iterator[LibvirtBackend]:
    be = LibvirtBackend(config, profile)
    try:
        be.check()  # guest image present, libvirt-qemu user there, embedded driver opens
        yield be
    finally:
        be.close()


@pytest.fixture
def guests(backend: LibvirtBackend) -> Iterator[list[LibvirtGuest]]:
    """Guests a test spawned; destroyed whatever happens."""
    spawned: list[LibvirtGuest] = []
    try:
        yield spawned
    finally:
        for guest in spawned:
            guest.destroy()


def spawn(backend: LibvirtBackend, guests: list[LibvirtGuest], name: str) -> LibvirtGuest:
    guest = backend.spawn(name, TOKEN)
    assert isinstance(guest, LibvirtGuest)
    guests.append(guest)
    return guest


def ping_agent(address: tuple[str, int], timeout: float) -> dict[str, object]:
    """Handshake + ping over the raw protocol, retried until the guest's agent answers."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=5.0) as sock:
                sock.settimeout(10.0)
                channel = client_handshake(sock, TOKEN)
                channel.send({"type": "request", "id": 1, "op": "ping", "args": {}})
                while True:
                    frame = channel.recv()
                    if frame.get("type") == "reply" and frame.get("id") == 1:
                        return frame
        except (OSError, ValueError) as exc:  # slirp accepts, then resets until the agent listens
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"agent at {address} did not answer within {timeout}s: {last!r}")


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def processes_of(name: str) -> list[psutil.Process]:
    """QEMU or screen processes of guest ``name`` still running."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        argv = proc.info["cmdline"] or []
        qemu = any(re.match(rf"guest=(farm-[0-9a-f]{{8}}-)?{name},", a) for a in argv)
        # libvirt's console screen runs the domain's pty (a qemu-backend screen of another
        # run on this machine, also named qemuN, runs qemu-system: not ours)
        screen = (
            bool(argv) and "screen" in argv[0].lower() and name in argv and "/dev/pts/" in argv[-1]
        )
        if qemu or screen:
            found.append(proc)
    return found


def screen_sessions() -> str:
    result = subprocess.run(
        ["screen", "-ls"], capture_output=True, text=True, timeout=10, check=False
    )
    return result.stdout


def domain_exists(backend: LibvirtBackend, name: str) -> bool:
    names = {d.name() for d in backend.connection().listAllDomains(0)}
    return bool({name, backend.domain_name(name)} & names)


def paused_domain(backend: LibvirtBackend, xml: str) -> libvirt.virDomain:
    return backend.connection().createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.timeout(300)
def test_guest_boots_logs_console_and_leaves_nothing(
    backend: LibvirtBackend, guests: list[LibvirtGuest], config: FarmConfig
) -> None:
    guest = spawn(backend, guests, "qemu1")
    assert guest.alive()
    host, port = guest.address(1.0)
    assert host == "127.0.0.1"
    reply = ping_agent((host, port), BOOT_TIMEOUT)
    assert reply["ok"] is True

    assert guest.console_log == (config.log_dir / "qemu1.console.log").resolve()
    console = guest.console_log.read_text(errors="replace")
    assert "farm-init:" in console and "farm-init: identity qemu1" in console  # key: virtio
    dom = backend.connection().lookupByName(backend.domain_name("qemu1"))
    assert dom.UUIDString() == guest.uuid
    assert ".qemu1\t" in screen_sessions()
    assert {p.pid for p in processes_of("qemu1")} >= {guest.pid}
    assert "qemu1" in backend.registry.entries()

    guest.destroy()
    guest.destroy()  # idempotent
    assert not guest.alive()
    assert processes_of("qemu1") == []
    assert ".qemu1\t" not in screen_sessions()
    assert not domain_exists(backend, "qemu1")
    assert set(backend.registry.entries()) & {"qemu1", "qemu1.screen"} == set()


@pytest.mark.timeout(120)
def test_sigkilled_qemu_reads_dead(backend: LibvirtBackend, guests: list[LibvirtGuest]) -> None:
    guest = spawn(backend, guests, "qemu2")
    assert guest.alive() and guest.pid is not None
    os.kill(guest.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while guest.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not guest.alive()
    guest.destroy()
    assert processes_of("qemu2") == []
    assert ".qemu2\t" not in screen_sessions()
    assert not domain_exists(backend, "qemu2")


@pytest.mark.timeout(120)
def test_reap_stale_takes_only_dead_farms_domains(
    backend: LibvirtBackend, config: FarmConfig, tmp_path: Path
) -> None:
    foreign_xml = """<domain type='qemu'>
      <name>not-farms</name><memory unit='MiB'>16</memory><vcpu>1</vcpu>
      <os><type arch='x86_64'>hvm</type></os>
      <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
    </domain>"""
    stale_spec = DomainSpec(
        name="qemu9",
        domain_type="qemu",
        emulator="/usr/bin/qemu-system-x86_64",
        machine=None,
        memory_mib=32,
        smp=1,
        kernel=Path(backend.profile.kernel).resolve(),
        cmdline="console=ttyS0",
        console_log=tmp_path / "qemu9.console.log",
        host_port=0,
        agent_port=3001,
        nic_model="virtio-net-pci",
        owner_pid=dead_pid(),
        owner_start=1.0,
        owner_host=socket.gethostname(),
        state_dir=config.state_dir.resolve(),
    )
    foreign = paused_domain(backend, foreign_xml)
    try:
        stale = paused_domain(backend, domain_xml(stale_spec))
        try:
            reaped = backend.reap_stale()
            assert "qemu9" in reaped
            assert "not-farms" not in reaped
            assert not domain_exists(backend, "qemu9")
            assert foreign.isActive()
            assert processes_of("qemu9") == []
        finally:
            destroy_domain(stale, log)
    finally:
        foreign.destroy()
    assert not domain_exists(backend, "not-farms")


@pytest.mark.timeout(120)
def test_spawn_replaces_stale_farm_domain_but_never_a_foreign_one(
    backend: LibvirtBackend, guests: list[LibvirtGuest], config: FarmConfig, tmp_path: Path
) -> None:
    foreign = paused_domain(
        backend,
        f"""<domain type='qemu'><name>{backend.domain_name("qemu7")}</name>
        <memory unit='MiB'>16</memory>
        <os><type arch='x86_64'>hvm</type></os></domain>""",
    )
    try:
        with pytest.raises(BackendError, match="not farm's"):
            backend.spawn("qemu7", TOKEN)
        assert foreign.isActive()
    finally:
        foreign.destroy()

    old = spawn(backend, guests, "qemu8")
    # Spawning a name whose farm domain is still there (a leftover) replaces it.
    new = spawn(backend, guests, "qemu8")
    assert new.uuid != old.uuid
    assert old.pid is not None and gone(old.pid)
    assert new.alive()
    new.destroy()
    old.destroy()
    assert processes_of("qemu8") == []


def test_bad_uri_is_a_clear_error(
    backend: LibvirtBackend, tmp_path: Path, profile: MachineProfile
) -> None:
    with pytest.raises(ConfigError, match="libvirt URI"):
        FarmConfig(libvirt_uri="not a uri")
    unreachable = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    bad = LibvirtBackend(FarmConfig(state_dir=tmp_path, libvirt_uri=unreachable), profile)
    with pytest.raises(BackendError, match="nonexistent/libvirt-sock"):
        bad.check()
    bad.close()
    # libvirt allows one embedded root per process; a second one is refused clearly.
    other = LibvirtBackend(FarmConfig(state_dir=tmp_path / "other"), profile)
    with pytest.raises(BackendError, match="one embedded root per process"):
        other.check()
    other.close()
    assert backend.connection().isAlive()


@pytest.mark.timeout(300)
def test_console_over_libvirt_stream(
    config: FarmConfig, backend: LibvirtBackend, profile: MachineProfile
) -> None:
    """The remote-host console path (libvirt stream into the local log), on the local driver."""
    streaming = LibvirtBackend(config, profile, console_stream=True)
    guest = streaming.spawn("qemu6", TOKEN)
    try:
        assert isinstance(guest, LibvirtGuest)
        ping_agent(guest.address(1.0), BOOT_TIMEOUT)
        assert guest.console_log is not None
        assert "farm-init: identity" in guest.console_log.read_text(errors="replace")
        assert ".qemu6\t" not in screen_sessions()
    finally:
        guest.destroy()
        streaming.close()
    assert processes_of("qemu6") == []


SPAWNER = """
import json, sys, time
from pathlib import Path
from farm.backend.libvirt import LibvirtBackend
from farm.config import FarmConfig
from farm.profile import MachineProfile
config = FarmConfig(state_dir=Path(sys.argv[1]), log_dir=Path(sys.argv[2]))
backend = LibvirtBackend(config, MachineProfile.from_dict(json.loads(sys.argv[3])))
guest = backend.spawn("qemu5", "t")
print(guest.pid, flush=True)
time.sleep(600)
"""

REAPER = """
import json, sys
from pathlib import Path
from farm.backend.libvirt import LibvirtBackend
from farm.config import FarmConfig
from farm.profile import MachineProfile
config = FarmConfig(state_dir=Path(sys.argv[1]), log_dir=Path(sys.argv[2]))
backend = LibvirtBackend(config, MachineProfile.from_dict(json.loads(sys.argv[3])))
print(json.dumps(backend.reap_stale()))
backend.close()
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A state dir short enough for the embedded driver's UNIX socket paths."""
    path = Path(tempfile.mkdtemp(prefix="farm-lv-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(300)
def test_next_farm_reaps_guests_of_a_sigkilled_farm(
    short_dir: Path, profile: MachineProfile
) -> None:
    """A farm SIGKILLed without its watchdog leaves a running QEMU; the next farm reaps it."""
    args = [str(short_dir / "state"), str(short_dir / "log"), json.dumps(profile.to_dict())]
    spawner = subprocess.Popen(
        [sys.executable, "-c", SPAWNER, *args], stdout=subprocess.PIPE, text=True
    )
    qemu_pid = None
    try:
        assert spawner.stdout is not None
        qemu_pid = int(spawner.stdout.readline())
        spawner.kill()
        spawner.wait(timeout=30)
        assert psutil.pid_exists(qemu_pid)  # the embedded driver's QEMU outlives farm
        result = subprocess.run(
            [sys.executable, "-c", REAPER, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "qemu5" in json.loads(result.stdout)
        assert processes_of("qemu5") == []
    finally:
        if spawner.poll() is None:
            spawner.kill()
            spawner.wait()
        for proc in processes_of("qemu5"):
            proc.kill()
