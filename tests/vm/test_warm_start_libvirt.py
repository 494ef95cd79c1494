"""Warm start on the libvirt backend (embedded driver, real QEMU under TCG).

Guests are restored from one saved template domain, concurrently, each with
its own name, UUID, hostfwd port and key (another guest's key opens none of
them); a Distributor on the default config (libvirt, warm start on) finishes
every set exactly once; a damaged snapshot or one QEMU refuses means a cold
boot, a rebuilt template and no set lost; the key also reaches the guest over
a libvirt channel stream (``virDomainOpenChannel``, what remote URIs use); a
spawn after the first takes the spare domain made ahead (``libvirt_spare``),
and neither ``close()`` nor a SIGKILLed farm (reaped by the next) leaves one.

libvirt allows one embedded root per process, so each scenario runs in a
child process (``child()`` below) with its own state dir; all of them share
one snapshot folder so the template boots once. Evidence of a restore is the
console: ``farm-init: identity NAME`` and none of the boot steps
(``farm-init: mounted``) that happened before the snapshot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from farm.image import ImageInfo

REPO = Path(__file__).resolve().parents[2]
PROFILE = {"accel": "tcg", "memory": 256}
WAIT = 180.0


# -- the child process: one scenario, asserting as it goes ---------------------------------


def config(root: Path, images: Path, **kw: Any) -> Any:
    """This scenario's config: own state and log dirs, the module's shared snapshot folder."""
    from farm.config import FarmConfig

    state = root / "state"
    state.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        (state / "snapshots").symlink_to(root.parent / "snapshots")
    values: dict[str, Any] = {
        "state_dir": state,
        "log_dir": root / "log",
        "log_file": True,
        "image_dir": images,
        "idle_linger": 0.5,
        "boot_timeout": 120.0,
        "profile": dict(PROFILE),
    }
    return FarmConfig(**{**values, **kw})


def handshake(guest: Any, token: str) -> dict[str, Any]:
    """The agent's hello once it answers with ``token``; PermissionError if it refuses it."""
    from farm.agent.protocol import ProtocolViolation, client_handshake

    deadline = time.monotonic() + WAIT
    while True:
        try:
            with socket.create_connection(guest.address(1.0), timeout=2.0) as sock:
                return client_handshake(sock, token).hello
        except PermissionError:
            raise
        except (OSError, ProtocolViolation, ValueError):  # slirp accepts before the agent
            if not guest.alive() or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def console(root: Path, name: str, marker: str, timeout: float = 10.0) -> str:
    """Guest ``name``'s console once it holds ``marker`` (or after ``timeout``)."""
    path = root / "log" / f"{name}.console.log"
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if marker in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def restored(root: Path, name: str) -> bool:
    text = console(root, name, f"farm-init: identity {name}")
    return f"farm-init: identity {name}" in text and "farm-init: mounted" not in text


def booted(root: Path, name: str) -> bool:
    return "farm-init: mounted" in console(root, name, "farm-init: mounted")


def snapshots(root: Path) -> list[Path]:
    return sorted((root.parent / "snapshots").glob("lv-*.bin"))


def run_sets(root: Path, cfg: Any, backend: Any, sets: int) -> None:
    """A Distributor on ``backend`` with 2 guests: every one of ``sets`` finishes exactly once."""
    from farm import Distributor
    from farm.monitors import FINISHED_NOT_ONCE, SqliteMonitor
    from farm.taskset import Task, TaskSet

    db = root / "results.db"
    dist = Distributor(cfg, backend=backend) if backend is not None else Distributor(cfg)
    try:
        dist.set_max_machine_value(2)
        task = {"pkg": "idle", "config": {"ms": 1000}, "numberofjobs": 1, "x-run": range(sets)}
        dist.add_job(TaskSet([Task(task)]), SqliteMonitor(db))
        assert dist.wait_finished(timeout=WAIT), dist.jobs()
    finally:
        dist.close()
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute(FINISHED_NOT_ONCE).fetchall() == []
        done = con.execute("SELECT COUNT(*) FROM tasksets WHERE state = 'finished'").fetchone()
        assert done[0] == sets, done


def scenario_concurrent(root: Path, images: Path) -> None:
    from farm.backend.libvirt import LibvirtBackend

    backend = LibvirtBackend(config(root, images))
    assert backend.warm is not None  # on by default: local URI, user-mode network
    tokens = {f"lv{i}": f"token-{i}-{i}{i}{i}" for i in range(1, 4)}
    guests: dict[str, Any] = {}
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = {n: pool.submit(backend.spawn, n, tok) for n, tok in tokens.items()}
            for name, future in futures.items():
                guests[name] = future.result()
        hellos = {name: handshake(guests[name], tokens[name]) for name in tokens}
        assert len({g.address(1.0) for g in guests.values()}) == 3
        assert len({g.uuid for g in guests.values()}) == 3
        for name, guest in guests.items():
            for other, token in tokens.items():
                if other != name:
                    with pytest.raises(PermissionError):
                        handshake(guest, token)
            assert restored(root, name), console(root, name, "")
        assert len({h["nonce"] for h in hellos.values()}) == 3  # reseeded clones
        assert len(snapshots(root)) == 1, snapshots(root)
    finally:
        for guest in guests.values():
            guest.destroy()
        backend.close()


def scenario_distributor(root: Path, images: Path) -> None:
    cfg = config(root, images)
    assert cfg.backend == "libvirt" and cfg.warm_start is True  # the defaults
    run_sets(root, cfg, None, 6)
    logs = (root / "log").glob("*.console.log")
    names = [n for p in logs if not (n := p.name.removesuffix(".console.log")).startswith("farm-t")]
    assert names and all(restored(root, n) for n in names), names


def scenario_corrupt(root: Path, images: Path) -> None:
    from farm.backend import snapshot
    from farm.backend.libvirt import LibvirtBackend

    cfg = config(root, images)
    backend = LibvirtBackend(cfg)
    assert backend.warm is not None
    guests: list[Any] = []
    try:
        snap = backend.warm.ensure()
        with snap.path.open("r+b") as f:  # bytes flipped mid-file: the SHA256 check sees it
            f.seek(snap.size // 2)
            f.write(b"\xff" * 4096)
        guests.append(backend.spawn("lv1", "tok-a"))
        assert handshake(guests[-1], "tok-a")["type"] == "hello"
        assert booted(root, "lv1") and not snap.path.exists()

        bogus = backend.warm.ensure()  # rebuilt; now garbage with matching metadata
        data = b"not a QEMU migration stream\n" * 1000
        bogus.path.write_bytes(data)
        meta = bogus.path.with_suffix(".json")
        text = meta.read_text().replace(bogus.sha256, snapshot._sha256(bogus.path))
        meta.write_text(text.replace(f'"size": {bogus.size}', f'"size": {len(data)}'))
        guests.append(backend.spawn("lv2", "tok-b"))
        assert handshake(guests[-1], "tok-b")["type"] == "hello"
        assert booted(root, "lv2"), console(root, "lv2", "")
        assert not bogus.path.exists()  # discarded: the next warm start rebuilds it
        for guest in guests:
            guest.destroy()
        guests.clear()

        # damaged again under a Distributor: the guest boots cold, no set is lost
        snap = backend.warm.ensure()
        with snap.path.open("r+b") as f:
            f.seek(snap.size // 3)
            f.write(b"\x00" * 4096)
        run_sets(root, cfg, backend, 4)
        assert len(snapshots(root)) == 1  # rebuilt by the second guest
    finally:
        for guest in guests:
            guest.destroy()
        backend.close()


def scenario_stream(root: Path, images: Path) -> None:
    from farm.backend.libvirt import LibvirtBackend
    from farm.backend.libvirt_snapshot import LibvirtWarm

    backend = LibvirtBackend(config(root, images), identity_stream=True, warm_start=False)
    assert backend.warm is None
    guests: list[Any] = []
    try:
        guests.append(backend.spawn("lv1", "stream-token-1"))
        xml = guests[-1]._dom.XMLDesc(0)
        assert "stream-token-1" not in xml and "farm.identity=boot" in xml
        assert handshake(guests[-1], "stream-token-1")["type"] == "hello"
        assert booted(root, "lv1")
        backend.warm = LibvirtWarm(backend)  # and a restore, its key over the stream too
        guests.append(backend.spawn("lv2", "stream-token-2"))
        assert handshake(guests[-1], "stream-token-2")["type"] == "hello"
        assert restored(root, "lv2"), console(root, "lv2", "")
        with pytest.raises(PermissionError):
            handshake(guests[-1], "stream-token-1")
    finally:
        for guest in guests:
            guest.destroy()
        backend.close()


def policies(pid: int) -> set[int]:
    """The scheduling policies of the threads of ``pid``."""
    return {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def scenario_spare(root: Path, images: Path) -> None:
    import libvirt

    from farm.backend.libvirt import LibvirtBackend
    from farm.procs import ProcessRegistry

    backend = LibvirtBackend(config(root, images))
    assert backend.warm is not None
    spares = backend.warm.spares
    guests: list[Any] = []
    spare_pid = None
    try:
        guests.append(backend.spawn("lv1", "tok-one"))  # restored; a spare is made after it
        assert spares.wait_ready(WAIT) and spares.used == 0
        names = {d.name() for d in backend.connection().listAllDomains(0)}
        spare_name = (names - {"lv1"}).pop()
        assert spare_name.startswith("farm-spare-"), names
        registry = ProcessRegistry(backend.config.state_dir)
        spare_pid = registry.entries()[spare_name]["pid"]
        # made from idle CPU only (never competing with the guests' sets), a guest like
        # any other once handed over
        assert policies(spare_pid) == {os.SCHED_IDLE}, policies(spare_pid)
        # it runs, waiting for its identity: a spawn does not wait for a resume
        spare_dom = backend.connection().lookupByName(spare_name)
        assert spare_dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING, spare_dom.state()
        guests.append(backend.spawn("lv2", "tok-two"))  # takes the spare
        assert spares.used == 1
        assert policies(spare_pid) == {os.SCHED_OTHER}, policies(spare_pid)
        assert guests[-1].pid == spare_pid and guests[-1]._dom.name() == spare_name
        assert handshake(guests[-1], "tok-two")["type"] == "hello"
        with pytest.raises(PermissionError):
            handshake(guests[-1], "tok-one")
        assert restored(root, "lv2"), console(root, "lv2", "")
        assert not (root / "log" / f"{spare_name}.console.log").exists()
        guests[-1]._screen_maker.join(WAIT)  # title and screen: after the hand-over
        if shutil.which("screen"):  # `screen -xr lv2` attaches to its console
            assert guests[-1]._screen is not None and "lv2.screen" in registry.entries()
        title = guests[-1]._dom.metadata(libvirt.VIR_DOMAIN_METADATA_TITLE, None)
        assert "farm lv2 of" in title, title
        entries = registry.entries()
        assert entries["lv2"]["pid"] == spare_pid and spare_name not in entries
        assert spares.wait_ready(WAIT)  # the next spare; close() must destroy it
        (spare2,) = {d.name() for d in backend.connection().listAllDomains(0)} - names
        spare_pid = registry.entries()[spare2]["pid"]
    finally:
        for guest in guests:
            guest.destroy()
        backend.close()
    assert spare_pid is not None and not psutil.pid_exists(spare_pid)  # the last spare's QEMU
    assert sorted(p.name for p in (root / "log").glob("*.console.log")) == [
        "lv1.console.log",
        "lv2.console.log",
    ]


def scenario_killed(root: Path, images: Path) -> None:
    """Make a spare, write its QEMU pid to ``root/spare.pid``, die by SIGKILL."""
    from farm.backend.libvirt import LibvirtBackend

    backend = LibvirtBackend(config(root, images))
    assert backend.warm is not None
    guest = backend.spawn("lv1", "tok-one")
    assert backend.warm.spares.wait_ready(WAIT)
    assert guest.alive()
    spare = next(n for n in backend.registry.entries() if n.startswith("farm-spare-"))
    (root / "spare.pid").write_text(f"{spare} {backend.registry.entries()[spare]['pid']}")
    os.kill(os.getpid(), signal.SIGKILL)


def scenario_reap(root: Path, images: Path) -> None:
    """The next farm on the killed farm's state dir reaps its guest and its spare."""
    from farm.backend.libvirt import LibvirtBackend

    spare, pid = (root / "spare.pid").read_text().split()
    assert psutil.pid_exists(int(pid))  # the embedded driver's QEMU outlived farm
    backend = LibvirtBackend(config(root, images), warm_start=False)
    try:
        reaped = backend.reap_stale()
    finally:
        backend.close()
    assert spare in reaped and "lv1" in reaped, reaped
    assert not psutil.pid_exists(int(pid))


def child(scenario: str, root: str, images: str) -> None:
    """Entry point of the child process (``python -c``)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    globals()[f"scenario_{scenario}"](Path(root), Path(images))
    print("SCENARIO OK")


# -- the tests: one child process each ------------------------------------------------------


def leftovers(root: Path) -> list[str]:
    """Live processes naming ``root`` on their command line (QEMU, screen)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            if str(root) in cmdline:
                found.append(f"{proc.pid}: {cmdline[:160]}")
    return found


@pytest.fixture(scope="module")
def warm_root(image: ImageInfo) -> Iterator[Path]:
    """A short directory (unix socket paths) whose ``snapshots`` all scenarios share."""
    root = Path(tempfile.mkdtemp(prefix="farmlw"))
    (root / "snapshots").mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def run(warm_root: Path, image: ImageInfo, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Run a scenario in a child process; nothing it started may outlive it."""

    def go(scenario: str, returncode: int = 0, where: str = "") -> None:
        root = warm_root / (where or scenario)
        code = (
            "import sys; from tests.vm.test_warm_start_libvirt import child; child(*sys.argv[1:])"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, scenario, str(root), str(image.kernel.parent)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=3 * WAIT,
        )
        out = (proc.stdout + proc.stderr)[-6000:]
        assert proc.returncode == returncode, out
        assert returncode != 0 or "SCENARIO OK" in proc.stdout, out

    yield go
    deadline = time.monotonic() + 10.0
    while (left := leftovers(warm_root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for entry in left:
        with contextlib.suppress(psutil.Error, ValueError):
            psutil.Process(int(entry.split(":")[0])).kill()
    assert left == [], f"processes left running: {left}"


def test_guests_restored_concurrently_each_with_its_own_name_and_key(run: Any) -> None:
    run("concurrent")


def test_default_distributor_warm_starts_and_finishes_every_set_once(run: Any) -> None:
    run("distributor")


def test_corrupt_snapshot_boots_cold_rebuilds_and_loses_no_set(run: Any) -> None:
    run("corrupt")


def test_key_over_a_libvirt_channel_stream_cold_and_warm(run: Any) -> None:
    run("stream")


def test_second_spawn_takes_the_spare_and_close_destroys_the_next(run: Any) -> None:
    run("spare")


def test_spare_of_a_sigkilled_farm_is_reaped_by_the_next(run: Any) -> None:
    run("killed", -signal.SIGKILL)  # its guest and spare still running
    run("reap", where="killed")
