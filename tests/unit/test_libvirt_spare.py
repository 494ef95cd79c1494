"""The libvirt warm spare's bookkeeping with a fake warm start: no libvirt, no QEMU.

One spare at a time, made in a thread after a spawn; a spawn waits for the one
being made (only one spawn waits), hands it over under the machine's name
(console log, registry, title) or falls back to a restore; close() destroys the
ready spare and the one being made; repeated failures stop the making. A spare
runs (resumed when made, waiting for its identity) and its screen session is
started after the hand-over, off the spawn's path.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from farm.backend import libvirt_spare
from farm.backend.libvirt_spare import Spares
from farm.backend.snapshot import Snapshot, SnapshotError
from farm.errors import ConfigError
from farm.procs import ProcessRegistry

WAIT = 30.0


class FakeDom:
    """A domain whose "QEMU" is a ``sleep`` child, ended by destroy()."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.title = ""
        self.active = True
        self.resumed = 0
        self.qemu = subprocess.Popen(["sleep", "120"])

    def name(self) -> str:
        return self._name

    def setMetadata(self, kind: int, text: str, *_rest: Any) -> None:
        self.title = text

    def isActive(self) -> bool:
        return self.active

    def resume(self) -> None:
        self.resumed += 1

    def UUIDString(self) -> str:
        return "0000"

    def destroy(self) -> None:
        self.active = False
        self.qemu.kill()
        self.qemu.wait()


class FakePort:
    def __init__(self) -> None:
        self.closed = False
        self.warmed_up = 0  # warm_up_guest() calls on this port (the no_sleepers fixture)

    def close(self) -> None:
        self.closed = True


class FakeWarm:
    """``loaded``/``finish``/``port`` of LibvirtWarm; ``gate`` holds ``loaded`` back."""

    def __init__(self, root: Path) -> None:
        (root / "log").mkdir()
        config = SimpleNamespace(log_dir=root / "log", state_dir=root / "state")
        self.backend = SimpleNamespace(
            config=config,
            registry=ProcessRegistry(root / "state"),
            local=False,
            console_stream=False,
            bridged=False,
        )
        self.gate = threading.Event()
        self.gate.set()
        self.fail: Exception | None = None
        self.made: list[Any] = []
        self.ports: list[FakePort] = []
        self.finished: list[tuple[str, str]] = []
        self.policies: list[int] = []  # of the maker thread: inside idle(), after it

    def loaded(
        self, snap: Snapshot, name: str, attach: bool = True, idle: Any = None, spare: bool = False
    ) -> tuple[Any, FakePort]:
        assert not attach and idle is not None and spare
        with idle():  # createXML: the maker thread is SCHED_IDLE, and only there
            self.policies.append(os.sched_getscheduler(0))
        self.policies.append(os.sched_getscheduler(0))
        assert self.gate.wait(WAIT)
        if self.fail is not None:
            raise self.fail
        console = self.backend.config.log_dir / f"{name}.console.log"
        console.write_text("spare console\n")
        registry, dom = self.backend.registry, FakeDom(name)
        registry.record(name, dom.qemu.pid, "libvirt-qemu")
        qemu = psutil.Process(dom.qemu.pid)
        guest = libvirt_spare.LibvirtGuest(
            name, dom, ("127.0.0.1", 1), registry, qemu=qemu, console=console, hostfwd=False
        )
        self.made.append(guest)
        self.ports.append(FakePort())
        return guest, self.ports[-1]

    def finish(self, guest: Any, port: FakePort, name: str, key: str, resumed: bool) -> None:
        assert resumed and guest._dom.resumed == 1  # resumed when made, not again
        port.close()
        self.finished.append((name, guest._dom.name()))

    def port(self, name: str) -> None:
        return None


@pytest.fixture(autouse=True)
def no_sleepers(monkeypatch: Any) -> Iterator[None]:
    """Every fake QEMU ends with its test; a spare's warm-up is counted on its FakePort."""

    def warm_up(port: FakePort, alive: Any, timeout: float) -> None:
        port.warmed_up += 1

    monkeypatch.setattr(libvirt_spare, "warm_up_guest", warm_up)
    before = set(psutil.Process().children())
    yield
    for proc in set(psutil.Process().children()) - before:
        proc.kill()
        proc.wait()


def snap(root: Path) -> Snapshot:
    return Snapshot(root / "lv-x.bin", "x", 1, "0")


def test_spawn_takes_the_spare_under_the_machine_name(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(libvirt_spare.libvirt_host, "start_screen", None)  # never: not local
    warm = FakeWarm(tmp_path)
    spares = Spares(warm)  # type: ignore[arg-type]
    assert spares.take(snap(tmp_path), "qemu1", "tok") is None  # none yet: restore
    spares.refill(snap(tmp_path))
    assert spares.wait_ready(WAIT)
    guest = spares.take(snap(tmp_path), "qemu2", "tok")
    assert guest is not None and guest.name == "qemu2" and spares.used == 1
    assert warm.finished == [("qemu2", "farm-spare-1")]
    assert [port.warmed_up for port in warm.ports] == [1]  # warmed up once, when made
    assert guest._screen_maker is not None
    guest._screen_maker.join(WAIT)
    assert guest._dom.title.startswith("farm qemu2 of ")
    assert warm.policies == [os.SCHED_IDLE, os.SCHED_OTHER]
    log = tmp_path / "log"
    assert (log / "qemu2.console.log").read_text() == "spare console\n"
    assert not (log / "farm-spare-1.console.log").exists()
    assert set(warm.backend.registry.entries()) == {"qemu2"}


def test_the_maker_stays_at_normal_priority_where_idle_could_not_be_left(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Without the right to leave SCHED_IDLE the maker never enters it (its QEMU would
    inherit it and stay there as a machine)."""
    monkeypatch.setattr(libvirt_spare, "can_leave_idle", lambda: False)
    warm = FakeWarm(tmp_path)
    spares = Spares(warm)  # type: ignore[arg-type]
    spares.refill(snap(tmp_path))
    assert spares.wait_ready(WAIT)
    assert warm.policies == [os.SCHED_OTHER, os.SCHED_OTHER]  # in createXML and after
    spares.close()


def test_screen_session_starts_after_the_hand_over_and_destroy_waits_for_it(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The spawn returns before ``screen`` is up; destroy() waits for it, then quits it."""
    gate, started = threading.Event(), threading.Event()
    screen = subprocess.Popen(["sleep", "120"])
    quit: list[Any] = []

    def start_screen(dom: Any, name: str, registry: Any, glog: Any) -> Any:
        started.set()
        assert gate.wait(WAIT)
        registry.record(f"{name}.screen", screen.pid, "screen")
        return screen

    monkeypatch.setattr(libvirt_spare.libvirt_host, "start_screen", start_screen)
    import farm.backend.libvirt_guest as libvirt_guest

    monkeypatch.setattr(libvirt_guest, "quit_screen", lambda name, proc: quit.append(proc))
    warm = FakeWarm(tmp_path)
    warm.backend.local = True
    spares = Spares(warm)  # type: ignore[arg-type]
    spares.refill(snap(tmp_path))
    assert spares.wait_ready(WAIT)
    guest = spares.take(snap(tmp_path), "qemu1", "tok")  # returns with screen still starting
    assert guest is not None and warm.finished == [("qemu1", "farm-spare-1")]
    assert started.wait(WAIT) and guest._screen is None
    destroyer = threading.Thread(target=guest.destroy)
    destroyer.start()
    destroyer.join(0.2)
    assert destroyer.is_alive() and not quit  # waits for the screen being started
    gate.set()
    destroyer.join(WAIT)
    assert quit == [screen] and "qemu1.screen" not in warm.backend.registry.entries()
    screen.kill()
    screen.wait()


def test_a_spawn_waits_for_the_spare_being_made(tmp_path: Path) -> None:
    warm = FakeWarm(tmp_path)
    warm.gate.clear()
    spares = Spares(warm)  # type: ignore[arg-type]
    spares.refill(snap(tmp_path))
    got: list[Any] = []
    taker = threading.Thread(target=lambda: got.append(spares.take(snap(tmp_path), "q", "t")))
    taker.start()
    deadline = time.monotonic() + WAIT
    while not spares._waiter and time.monotonic() < deadline:
        time.sleep(0.01)
    assert spares._waiter
    # a second spawn meanwhile does not wait: there is one spare
    assert spares.take(snap(tmp_path), "other", "t") is None
    warm.gate.set()
    taker.join(WAIT)
    assert got and got[0] is not None and got[0].name == "q"
    assert spares.waited == 1 and spares.used == 1


def test_close_destroys_the_ready_spare_and_the_one_being_made(tmp_path: Path) -> None:
    warm = FakeWarm(tmp_path)
    spares = Spares(warm)  # type: ignore[arg-type]
    spares.refill(snap(tmp_path))
    assert spares.wait_ready(WAIT)
    spares.close()
    assert not warm.made[0]._dom.active
    assert not list((tmp_path / "log").iterdir()) and warm.backend.registry.entries() == {}

    (tmp_path / "b").mkdir()
    warm2 = FakeWarm(tmp_path / "b")
    warm2.gate.clear()
    spares = Spares(warm2)  # type: ignore[arg-type]
    spares.refill(snap(tmp_path))
    closer = threading.Thread(target=spares.close)
    closer.start()
    warm2.gate.set()  # made while closing: destroyed, not kept
    closer.join(WAIT)
    assert not closer.is_alive() and not warm2.made[0]._dom.active
    spares.refill(snap(tmp_path))  # closed: no more
    assert not spares.wait_ready(WAIT) and len(warm2.made) == 1


def test_dead_spare_is_discarded_and_failures_stop_the_making(tmp_path: Path) -> None:
    warm = FakeWarm(tmp_path)
    spares = Spares(warm)  # type: ignore[arg-type]
    spares.refill(snap(tmp_path))
    assert spares.wait_ready(WAIT)
    warm.made[0]._dom.active = False  # its QEMU died while it waited
    assert spares.take(snap(tmp_path), "qemu1", "tok") is None
    warm.fail = SnapshotError("boom")
    for _ in range(libvirt_spare.MAX_FAILURES):
        spares.refill(snap(tmp_path))
        assert not spares.wait_ready(WAIT)
    assert spares.off == "boom"
    warm.fail = None
    spares.refill(snap(tmp_path))
    assert not spares.wait_ready(WAIT) and len(warm.made) == 1


def test_a_bridged_spare_becomes_the_machine_at_its_reserved_address(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """On the bridge the guest is reached at the machine's reservation (its identity gives
    it that address), not the template's; a machine without one: the spare is destroyed."""
    monkeypatch.setattr(libvirt_spare.libvirt_host, "start_screen", None)  # never: not local
    warm = FakeWarm(tmp_path)
    ip = ipaddress.IPv4Address("10.200.40.17")
    warm.backend.bridged = True
    warm.backend.config.agent_port = 3001
    warm.backend._reservation = lambda name: ("52:54:00:fa:00:07", ip)
    spares = Spares(warm)  # type: ignore[arg-type]
    spares.refill(snap(tmp_path))
    assert spares.wait_ready(WAIT)
    guest = spares.take(snap(tmp_path), "qemu7", "tok")
    assert guest is not None and guest.address(0.0) == (str(ip), 3001) and not guest._hostfwd

    def no_reservation(name: str) -> Any:
        raise ConfigError(f"machine name {name!r} does not end in an id")

    warm.backend._reservation = no_reservation
    spares.refill(snap(tmp_path))
    assert spares.wait_ready(WAIT)
    with pytest.raises(ConfigError):
        spares.take(snap(tmp_path), "bogus", "tok")
    assert not warm.made[-1].alive()  # destroyed, not left running
    assert set(warm.backend.registry.entries()) == {"qemu7"}
    guest.destroy()
