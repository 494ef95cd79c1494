"""Warm start of the qemu backend: guests restored from one saved template guest (TCG).

Each restored guest must get its own name and token (the other guest's token is
refused), be reachable on its own hostfwd port, run task sets through a
Distributor, and must differ in its random numbers from its clones. The
snapshot is rebuilt when its inputs change, and a damaged snapshot means a cold
boot, not a failure. Evidence that a guest was restored and not booted is its
console: a restored guest prints ``farm-init: identity NAME`` and never the
boot steps (``farm-init: mounted ...``) that happened before the snapshot.

All tests share one snapshot folder (module fixture) so the template boots once;
after each test no process may name the module's directory on its command line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from farm import Distributor
from farm.agent.protocol import ProtocolViolation, client_handshake
from farm.backend import snapshot
from farm.backend.base import Guest
from farm.backend.qemu import QemuBackend
from farm.config import FarmConfig
from farm.image import ImageInfo
from farm.monitors import FINISHED_NOT_ONCE, SqliteMonitor
from farm.session.agent import FarmSession
from farm.taskset import Task, TaskSet

log = logging.getLogger(__name__)
PROFILE = {"accel": "tcg", "memory": 256}
WAIT = 180.0


@dataclass
class WarmFarm:
    """One test's farm dirs; ``snapshots`` is shared by the module's tests."""

    root: Path
    path: Path
    images: Path

    def config(self, **kw: Any) -> FarmConfig:
        """Config of this test: own state and log dirs, the shared snapshot folder."""
        state = self.path / "state"
        state.mkdir(parents=True, exist_ok=True)
        link = state / "snapshots"
        if not link.exists():
            link.symlink_to(self.root / "snapshots")
        values: dict[str, Any] = {
            "backend": "qemu",
            "state_dir": state,
            "log_dir": self.path / "log",
            "log_file": True,  # pytest configures logging: "auto" would not
            "image_dir": self.images,
            "idle_linger": 0.5,
            "boot_timeout": 120.0,
            "profile": dict(PROFILE),
        }
        values.update(kw)
        return FarmConfig(**values)

    def snapshots(self) -> list[Path]:
        return sorted((self.root / "snapshots").glob("*.bin"))

    def console(self, name: str) -> str:
        path = self.path / "log" / f"{name}.console.log"
        return path.read_text(errors="replace") if path.exists() else ""


def leftovers(root: Path) -> list[str]:
    """Live processes naming ``root`` on their command line (QEMU, screen, templates)."""
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
    """A short directory (unix socket paths) whose ``snapshots`` folder all tests share."""
    root = Path(tempfile.mkdtemp(prefix="farmw"))
    (root / "snapshots").mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def farm(warm_root: Path, image: ImageInfo, request: pytest.FixtureRequest) -> Iterator[WarmFarm]:
    """This test's farm; nothing it started may outlive it."""
    path = warm_root / request.node.name[5:25]
    yield WarmFarm(warm_root, path, image.kernel.parent)
    deadline = time.monotonic() + 10.0
    left = leftovers(warm_root)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftovers(warm_root)
    for entry in left:
        with contextlib.suppress(psutil.Error, ValueError):
            psutil.Process(int(entry.split(":")[0])).kill()
    assert left == [], f"processes left running: {left}"


def handshake(guest: Guest, token: str, timeout: float = WAIT) -> dict[str, Any]:
    """The agent's hello once it answers with ``token``; PermissionError if it refuses it."""
    host, port = guest.address(timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0) as sock:
                return client_handshake(sock, token).hello
        except PermissionError:
            raise
        except (OSError, ProtocolViolation, ValueError):  # slirp accepts before the agent listens
            if not guest.alive() or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def console_after(farm: WarmFarm, name: str, marker: str, timeout: float = 10.0) -> str:
    """Guest ``name``'s console once it holds ``marker`` (screen flushes its log each second)."""
    deadline = time.monotonic() + timeout
    while marker not in (text := farm.console(name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return text


def restored(farm: WarmFarm, name: str) -> bool:
    """True if guest ``name``'s console shows a restore (identity), not a boot."""
    text = console_after(farm, name, f"farm-init: identity {name}")
    return f"farm-init: identity {name}" in text and "farm-init: mounted" not in text


def booted(farm: WarmFarm, name: str) -> bool:
    """True if guest ``name``'s console shows a cold boot."""
    return "farm-init: mounted" in console_after(farm, name, "farm-init: mounted")


def test_two_guests_restored_concurrently_each_with_its_own_token(farm: WarmFarm) -> None:
    """Two guests from one snapshot at once: own port, own token, other token refused."""
    backend = QemuBackend(farm.config(), warm_start=True)
    tokens = {"qemu1": "token-one-1111", "qemu2": "token-two-2222"}
    guests: dict[str, Guest] = {}
    try:
        with ThreadPoolExecutor(2) as pool:
            futures = {name: pool.submit(backend.spawn, name, tok) for name, tok in tokens.items()}
            for name, future in futures.items():
                guests[name] = future.result()
        hellos = {name: handshake(guests[name], tokens[name]) for name in tokens}
        ports = {guests[name].address(1.0) for name in tokens}
        assert len(ports) == 2, ports
        for name, other in (("qemu1", "qemu2"), ("qemu2", "qemu1")):
            with pytest.raises(PermissionError):
                handshake(guests[name], tokens[other])
            assert handshake(guests[name], tokens[name])["type"] == "hello"
        # restored guests reseed their RNG: the clones' nonces differ
        assert hellos["qemu1"]["nonce"] != hellos["qemu2"]["nonce"]
        for name in tokens:
            assert restored(farm, name), farm.console(name)
        assert len(farm.snapshots()) == 1, farm.snapshots()
    finally:
        for guest in guests.values():
            guest.destroy()
        backend.close()


def test_restored_guest_was_warmed_up_in_its_template_and_runs_its_first_set(
    farm: WarmFarm,
) -> None:
    """The template ran a private set before it was saved (farm/agent/warmup.py), and the
    restored guest ran it again in its own QEMU before its identity; the agent reports
    both, and its first set (whose start-up work found the machinery loaded) runs at once."""
    backend = QemuBackend(farm.config(), warm_start=True)
    guest = backend.spawn("qemu1", "tok-warm")
    try:
        host, port = guest.address(WAIT)
        session = FarmSession(host, port, token="tok-warm", connect_attempts=1000)
        session.connect(timeout=WAIT, alive=guest.alive)
        try:
            status = session.status()
            assert status["before_identity"] is True  # the agent itself was set up there too
            warm_ups = status["warm_up"]  # the template's, then the restore's (its own QEMU)
            assert len(warm_ups) == 2, warm_ups
            for warm_up in warm_ups:
                ends = [e for e in warm_up if e.startswith("EXIT")]  # EXIT_PERIOD if TCG slow
                assert warm_up.count("START") == len(ends) == 3, warm_up
                assert warm_up.count("JOBS_DONE") == 2, warm_up
            session.start(TaskSet([Task({"id": 1, "pkg": "hey", "numberofjobs": 1})]))
            events = []
            deadline = time.monotonic() + 20.0  # (a start waiting for nothing took 60 s)
            while not session.finished() and time.monotonic() < deadline:
                events += session.run(1.0)
            assert [e.type.name for e in events if e.task_id == 1] == [
                "START",
                "EXIT",
                "JOBS_DONE",
            ], events
        finally:
            session.close()
        assert restored(farm, "qemu1"), farm.console("qemu1")
    finally:
        guest.destroy()
        backend.close()


def test_restored_guests_map_the_template_ram_copy_on_write(farm: WarmFarm) -> None:
    """The snapshot holds no RAM; each restored QEMU maps the template's RAM file privately.

    Its QEMU runs with transparent huge pages off (snapshot_mem.no_thp).
    """
    backend = QemuBackend(farm.config(), warm_start=True)
    guests: list[Guest] = []
    try:
        for name in ("qemu1", "qemu2"):
            guests.append(backend.spawn(name, "tok-" + name))
            assert handshake(guests[-1], "tok-" + name)["type"] == "hello"
        snap = snapshot.ensure(backend._wprofile, backend.config.state_dir, ram=True)
        assert snap.ram is not None and snap.ram.stat().st_size == 256 << 20
        assert snap.size < 16 << 20, snap.size  # device state only: the RAM is in the file
        for guest in guests:
            maps = Path(f"/proc/{guest.pid}/maps").read_text().splitlines()
            mapped = [line.split()[1] for line in maps if line.endswith(str(snap.ram))]
            assert mapped == ["rw-p"], maps  # private: the guest's writes stay its own
            status = Path(f"/proc/{guest.pid}/status").read_text()
            assert "THP_enabled:\t0" in status  # no 2 MiB pages behind QEMU's small blocks
    finally:
        for guest in guests:
            guest.destroy()
        backend.close()


def idle_sets(n: int, ms: int) -> TaskSet:
    """``n`` variants of one task sleeping ``ms`` in the guest."""
    return TaskSet(
        [Task({"pkg": "idle", "config": {"ms": ms}, "numberofjobs": 1, "x-run": range(n)})]
    )


def test_distributor_runs_task_sets_on_restored_guests(farm: WarmFarm) -> None:
    """A Distributor with a warm-start qemu backend: 2 restored guests finish every set once."""
    cfg = farm.config()
    db = farm.path / "results.db"
    dist = Distributor(cfg, backend=QemuBackend(cfg, warm_start=True))
    try:
        dist.set_max_machine_value(2)
        dist.add_job(idle_sets(6, 1500), SqliteMonitor(db))
        assert dist.wait_finished(timeout=WAIT), dist.jobs()
    finally:
        dist.close()
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute(FINISHED_NOT_ONCE).fetchall() == []
        finished = con.execute("SELECT COUNT(*) FROM tasksets WHERE state = 'finished'")
        assert finished.fetchone()[0] == 6
    dlog = (cfg.log_dir / "distributor.log").read_text(errors="replace")
    for name in ("qemu1", "qemu2"):
        assert restored(farm, name), farm.console(name)
        # each guest ran sets: its "set ... finished" line (a set's one INFO line)
        assert any(name in line and " finished" in line for line in dlog.splitlines()), name


def test_corrupt_snapshot_falls_back_to_a_cold_boot(farm: WarmFarm) -> None:
    """A damaged file (bad SHA256), and a file QEMU cannot load: both guests boot cold."""
    backend = QemuBackend(farm.config(), warm_start=True)
    guests: list[Guest] = []
    try:
        snap = snapshot.ensure(backend._wprofile, backend.config.state_dir, ram=True)
        with snap.path.open("r+b") as f:  # flip bytes in the middle: the SHA256 check sees it
            f.seek(snap.size // 2)
            f.write(b"\xff" * 4096)
        guests.append(backend.spawn("qemu1", "tok-a"))
        assert handshake(guests[0], "tok-a")["type"] == "hello"
        assert booted(farm, "qemu1"), farm.console("qemu1")  # booted, not restored
        assert not snap.path.exists()

        # garbage QEMU cannot load, with matching metadata (passes the SHA256 check)
        bogus = snapshot.ensure(backend._wprofile, backend.config.state_dir, ram=True)  # rebuilt
        data = b"not a QEMU migration stream\n" * 1000
        bogus.path.write_bytes(data)
        meta = bogus.path.with_suffix(".json")
        meta.write_text(meta.read_text().replace(bogus.sha256, snapshot._sha256(bogus.path)))
        meta.write_text(meta.read_text().replace(f'"size": {bogus.size}', f'"size": {len(data)}'))
        guests.append(backend.spawn("qemu2", "tok-b"))
        assert handshake(guests[1], "tok-b")["type"] == "hello"
        assert booted(farm, "qemu2"), farm.console("qemu2")
        assert not bogus.path.exists()  # discarded: the next warm start rebuilds it

        # a damaged RAM file (the template's memory, shared by restored guests)
        again = snapshot.ensure(backend._wprofile, backend.config.state_dir, ram=True)
        assert again.ram is not None
        with again.ram.open("r+b") as f:
            f.seek(again.ram.stat().st_size // 2)
            f.write(b"\xff" * 4096)
        guests.append(backend.spawn("qemu3", "tok-c"))
        assert handshake(guests[2], "tok-c")["type"] == "hello"
        assert booted(farm, "qemu3"), farm.console("qemu3")
        assert not again.path.exists() and not again.ram.exists()
    finally:
        for guest in guests:
            guest.destroy()
        backend.close()


def test_snapshot_rebuilt_when_its_inputs_change(farm: WarmFarm) -> None:
    """Another memory size is another snapshot; a restored guest of it works."""
    base = farm.config()
    other = farm.config(profile={**PROFILE, "memory": 192})
    key_base = snapshot.snapshot_key(QemuBackend(base, warm_start=True)._wprofile, ram=True)
    backend = QemuBackend(other, warm_start=True)
    assert snapshot.snapshot_key(backend._wprofile, ram=True) != key_base
    guest = None
    try:
        guest = backend.spawn("qemu1", "tok-192")
        assert handshake(guest, "tok-192")["type"] == "hello"
        assert restored(farm, "qemu1"), farm.console("qemu1")
        names = {p.stem for p in farm.snapshots()}
        assert snapshot.snapshot_key(backend._wprofile, ram=True) in names, names
    finally:
        if guest is not None:
            guest.destroy()
        backend.close()
