"""The qemu backend's spare guest, its bookkeeping with fakes: no QEMU, no guest.

One spare at a time, made in a thread from idle CPU after a spawn: restored,
resumed and asked to warm up (``{"warm_up": true}``, answered ``farm-identity:
warm``); a spawn takes a ready one, or waits for the one being made (lifting it out
of SCHED_IDLE), records it under the machine's name and writes the machine's identity
and key; a stale spare is discarded; close() destroys the ready spare and the one being
made; repeated failures stop the making. On the bridge the spare runs on a tap of its
own, renamed to the machine's at hand-over, and the identity carries the machine's
reserved MAC and IP.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from farm.backend import identity_port, qemu_spare, snapshot, spare_tap
from farm.backend.qemu_spare import QemuSpares
from farm.backend.snapshot import Snapshot, SnapshotError
from farm.backend.snapshot_net import TEMPLATE_MAC, WarmNet
from farm.bridge.dhcp import DhcpPlan, mac_for, machine_id
from farm.errors import ConfigError, NetworkError
from farm.procs import ProcessRegistry

WAIT = 30.0


class FakeGuest:
    """A restored guest whose "QEMU" is a ``sleep`` child (``process.popen``), ended by
    destroy(); built as QemuGuest is (the hand-over makes one with ``type(old)(...)``)."""

    def __init__(
        self, name: str, port: int, process: Any, run_dir: Path, console: Path,
        host: str = "127.0.0.1", on_destroy: Any = None, nic: Any = None,
    ) -> None:  # fmt: skip
        self.name, self.port, self.process, self.run_dir = name, port, process, run_dir
        self._console, self.host, self._on_destroy, self.nic = console, host, on_destroy, nic
        self.destroyed = threading.Event()
        self.log = SimpleNamespace(info=lambda *a: None)

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    @property
    def console_log(self) -> Path:
        return self._console

    def alive(self) -> bool:
        return not self.destroyed.is_set() and self.process.popen.poll() is None

    def destroy(self) -> None:
        self.destroyed.set()
        self.process.popen.kill()
        self.process.popen.wait()
        self.process.registry.forget(self.process.name)
        if self._on_destroy is not None:
            self._on_destroy()


class FakeBackend:
    """``config``, ``registry`` and ``_spawn`` of QemuBackend; records what the spare did."""

    def __init__(self, root: Path, network: str = "user") -> None:
        (root / "log").mkdir()
        self.root = root
        self.config = SimpleNamespace(
            log_dir=root / "log", network=network, state_dir=root / "state"
        )
        self.registry = ProcessRegistry(root / "state")
        self.spawned: list[FakeGuest] = []
        self.gate = threading.Event()  # holds the snapshot's load back
        self.gate.set()
        self.answer = identity_port.WARM
        self.policies: list[int] = []  # the maker thread's policy at each spawn
        self.sent: list[bytes] = []
        self.identities: list[tuple[str, str, Any]] = []
        self.net: Any = None  # bridged: a WarmNet (_warm_net)
        self._net: Any = None  # bridged: network() with reservation(name)

    def _warm_net(self) -> Any:
        return self.net

    def _spawn(
        self,
        name: str,
        token: str,
        warm: Snapshot | None = None,
        prefix: tuple[str, ...] = (),
        tap: Any = None,
    ) -> FakeGuest:
        assert warm is not None and token == ""  # a restore: no key on any command line
        self.policies.append(os.sched_getscheduler(0))
        run_dir = self.root / "state" / "qemu" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        console = self.root / "log" / f"{name}.console.log"
        console.write_text("console\n")
        popen = subprocess.Popen([*prefix, "sleep", "120"])
        comm = Path(f"/proc/{popen.pid}/comm")
        while comm.read_text().strip() != "sleep":  # QEMU writes its pidfile once it runs
            threading.Event().wait(0.001)
        process = SimpleNamespace(
            pid=popen.pid, popen=popen, screen_pid=None, qmp=None, name=name,
            log_file=console, registry=self.registry,
        )  # fmt: skip
        self.registry.record(name, popen.pid, "qemu")
        guest = FakeGuest(name, 0, process, run_dir, console, "127.0.0.1", None, tap)
        if tap is not None:
            guest._on_destroy = tap.release
        self.spawned.append(guest)
        return guest


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBackend]:
    fake = FakeBackend(tmp_path)

    class Port:
        def sendall(self, data: bytes) -> None:
            fake.sent.append(data)

        def close(self) -> None:
            pass

    def resume(snap: Snapshot, run_dir: Path, timeout: float, qmp: Any) -> None:
        guest = fake.spawned[-1]
        while not fake.gate.wait(0.01):
            if guest.destroyed.is_set():
                raise SnapshotError("QEMU ended")

    def send_identity(
        port: Any, name: str, key: str, alive: Any, timeout: float, net: Any = None
    ) -> None:
        fake.identities.append((name, key, net))

    monkeypatch.setattr(identity_port, "connect", lambda path, alive, timeout: Port())
    monkeypatch.setattr(snapshot, "resume", resume)
    monkeypatch.setattr(identity_port, "read_line", lambda sock, timeout, alive: fake.answer)
    monkeypatch.setattr(identity_port, "send_identity", send_identity)
    monkeypatch.setattr(qemu_spare, "QUIET", 0.05)  # the making's quiet wait, short here
    yield fake
    for guest in fake.spawned:
        guest.process.popen.kill()
        guest.process.popen.wait()


def snap(tmp_path: Path, name: str = "a") -> Snapshot:
    return Snapshot(tmp_path / f"{name}.bin", name, 1, "0")


def spares_of(backend: FakeBackend) -> QemuSpares:
    spares = QemuSpares(backend)  # type: ignore[arg-type]
    return spares


def test_a_spawn_takes_the_warmed_spare_under_its_own_name_and_key(
    backend: FakeBackend, tmp_path: Path
) -> None:
    spares = spares_of(backend)
    s = snap(tmp_path)
    assert spares.take(s, "qemu1", "key-1") is None  # none made yet, none being made
    spares.refill(s)
    assert spares.wait_ready(WAIT)
    assert backend.sent == [identity_port.WARM_UP]  # asked to warm up after its restore
    (spare,) = backend.spawned
    assert os.sched_getscheduler(spare.pid) == os.SCHED_IDLE  # made from idle CPU
    assert backend.policies == [os.SCHED_OTHER]  # not farm's own thread (it holds the GIL)
    guest = spares.take(s, "qemu2", "key-2")
    try:
        assert guest is not None and guest.name == "qemu2" and spares.used == 1
        assert guest.pid == spare.pid
        assert backend.identities == [("qemu2", "key-2", None)]  # its own key, over the port
        entries = backend.registry.entries()
        assert entries["qemu2"]["pid"] == spare.pid and spare.name not in entries
        assert os.sched_getscheduler(spare.pid) == os.SCHED_OTHER
        assert spares.take(s, "qemu3", "key-3") is None  # one spare only
    finally:
        spares.close()


def test_a_stale_spare_is_discarded_and_the_spawn_restores(
    backend: FakeBackend, tmp_path: Path
) -> None:
    spares = spares_of(backend)
    spares.refill(snap(tmp_path, "old"))
    assert spares.wait_ready(WAIT)
    assert spares.take(snap(tmp_path, "new"), "qemu1", "key") is None
    (spare,) = backend.spawned
    assert spare.destroyed.is_set() and not spare.console_log.exists()
    spares.close()


def waiting(spares: QemuSpares) -> None:
    """Until a spawn waits for the spare (it lifted it under the lock it then releases)."""
    while True:
        with spares._cond:
            if spares._waiter:
                return
        threading.Event().wait(0.01)


def test_a_spare_is_made_at_normal_priority_where_it_could_not_be_lifted(
    backend: FakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the right to leave SCHED_IDLE (a user's farm) the spare's QEMU never enters
    it: lifted it could not be, and the machine it becomes would run at idle priority."""
    monkeypatch.setattr(qemu_spare, "can_leave_idle", lambda: False)
    spares = spares_of(backend)
    s = snap(tmp_path)
    spares.refill(s)
    assert spares.wait_ready(WAIT)
    (spare,) = backend.spawned
    assert os.sched_getscheduler(spare.pid) == os.SCHED_OTHER
    spares.close()


def test_a_spawn_right_after_another_restores_while_the_maker_waits_for_quiet(
    backend: FakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No spare is made within QUIET of a spawn (the new guest's first sets run
    undisturbed); a spawn meanwhile neither waits nor finds one: it restores its own."""
    monkeypatch.setattr(qemu_spare, "QUIET", 3600.0)
    spares = spares_of(backend)
    s = snap(tmp_path)
    spares.refill(s)
    assert spares.take(s, "qemu1", "k1") is None
    assert spares.waited == 0 and backend.spawned == []  # nothing launched, no wait
    spares.close()  # ends the quiet wait at once: nothing made
    assert backend.spawned == [] and spares._maker is None


def test_a_spawn_before_the_maker_reaches_its_quiet_wait_restores_without_waiting(
    backend: FakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after refill() the maker thread may not be in its quiet wait yet: a spawn then
    restores too (it waited for the quiet second and the whole making)."""
    monkeypatch.setattr(qemu_spare, "QUIET", 3600.0)
    spares = spares_of(backend)
    monkeypatch.setattr(spares, "TAKE_WAIT", 2.0)
    entered, go = threading.Event(), threading.Event()
    real = spares._wait_quiet

    def late_start() -> bool:
        entered.set()
        go.wait(WAIT)
        return real()

    monkeypatch.setattr(spares, "_wait_quiet", late_start)
    s = snap(tmp_path)
    spares.refill(s)
    assert entered.wait(WAIT)  # the maker runs, not in its quiet wait yet
    assert spares.take(s, "qemu1", "k1") is None
    assert spares.waited == 0 and backend.spawned == []
    go.set()
    spares.close()
    assert backend.spawned == [] and spares._maker is None


def test_a_spawn_waits_for_the_spare_being_made_and_lifts_it(
    backend: FakeBackend, tmp_path: Path
) -> None:
    """Back to back: the rest of the spare's making costs less than a restore of its own."""
    spares = spares_of(backend)
    s = snap(tmp_path)
    backend.gate.clear()  # the spare's load is held back
    spares.refill(s)
    while spares._making is None:
        threading.Event().wait(0.01)
    (spare,) = backend.spawned
    assert os.sched_getscheduler(spare.pid) == os.SCHED_IDLE
    taken: list[Any] = []
    taker = threading.Thread(target=lambda: taken.append(spares.take(s, "qemu1", "k1")))
    taker.start()
    waiting(spares)
    assert os.sched_getscheduler(spare.pid) == os.SCHED_OTHER  # wanted: no longer idle
    assert taken == [] and spares.waited == 1
    spares.refill(s)  # one spare at a time: the one being made stays
    backend.gate.set()
    taker.join(WAIT)
    (guest,) = taken
    assert guest is not None and guest.name == "qemu1" and guest.pid == spare.pid
    assert len(backend.spawned) == 1 and spares.used == 1
    assert backend.identities == [("qemu1", "k1", None)]
    spares.close()


def test_a_spare_launched_as_a_spawn_starts_waiting_is_lifted(
    backend: FakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spares = spares_of(backend)
    s = snap(tmp_path)
    backend.gate.clear()
    spawn, launching = backend._spawn, threading.Event()

    def slow_spawn(*args: Any, **kw: Any) -> FakeGuest:
        launching.set()
        while not spares._waiter:  # the spawn comes while QEMU is being launched
            threading.Event().wait(0.01)
        return spawn(*args, **kw)

    monkeypatch.setattr(backend, "_spawn", slow_spawn)
    spares.refill(s)
    launching.wait(WAIT)
    taken: list[Any] = []
    taker = threading.Thread(target=lambda: taken.append(spares.take(s, "qemu1", "k1")))
    taker.start()
    while True:  # launched: recorded and lifted under the lock
        with spares._cond:
            if spares._making is not None:
                break
        threading.Event().wait(0.01)
    assert os.sched_getscheduler(backend.spawned[0].pid) == os.SCHED_OTHER
    backend.gate.set()
    taker.join(WAIT)
    assert taken and taken[0] is not None and spares.waited == 1
    spares.close()


def test_close_destroys_the_ready_spare_and_the_one_being_made(
    backend: FakeBackend, tmp_path: Path
) -> None:
    spares = spares_of(backend)
    s = snap(tmp_path)
    spares.refill(s)
    assert spares.wait_ready(WAIT)
    spares.close()
    assert backend.spawned[0].destroyed.is_set()
    spares = spares_of(backend)
    backend.gate.clear()
    spares.refill(s)
    while len(backend.spawned) < 2:
        threading.Event().wait(0.01)
    spares.close()  # does not wait for the load: the guest being made is destroyed
    assert backend.spawned[1].destroyed.is_set() and spares.off == ""
    assert not spares.wait_ready(0.1)
    assert not any(n.startswith("farm-spare-") for n in backend.registry.entries())


def test_repeated_failures_stop_the_making(backend: FakeBackend, tmp_path: Path) -> None:
    spares = spares_of(backend)
    backend.answer = b"farm-identity: agent exited with 1"  # an image without warm_up
    for _ in range(qemu_spare.MAX_FAILURES):
        spares.refill(snap(tmp_path))
        assert not spares.wait_ready(WAIT)
    assert spares.off and all(g.destroyed.is_set() for g in backend.spawned)
    spares.refill(snap(tmp_path))
    assert len(backend.spawned) == qemu_spare.MAX_FAILURES  # no more tried
    spares.close()


def _bridged(
    backend: FakeBackend,
    plan: DhcpPlan,
    taps: set[str],
    rename: Callable[[str, str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Put ``backend`` on a fake bridge: taps made and removed in ``taps``, machines'
    reservations from ``plan``, ``rename`` as spare_tap.rename_tap, no netlink."""
    backend.net = WarmNet(plan, bridge=SimpleNamespace(add_tap=taps.add))  # type: ignore[arg-type]
    reserved = SimpleNamespace(
        reservation=lambda name: (mac_for(machine_id(name)), plan.ip_for(machine_id(name)))
    )
    backend._net = SimpleNamespace(network=lambda: reserved)
    monkeypatch.setattr(spare_tap, "rename_tap", rename)
    monkeypatch.setattr(spare_tap, "remove_unused", list)
    monkeypatch.setattr("farm.bridge.bridge.remove_tap", taps.discard)


def test_a_bridged_spare_gets_the_machines_tap_mac_and_ip(
    backend: FakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spare's tap (farm-tapsPID) becomes the machine's (farm-tapN); the identity
    carries the machine's reserved MAC and IP; destroy removes the renamed tap."""
    plan = DhcpPlan.create()
    taps: set[str] = set()

    def rename(old: str, new: str) -> None:
        taps.remove(old)
        taps.add(new)

    _bridged(backend, plan, taps, rename, monkeypatch)
    spares = spares_of(backend)
    s = snap(tmp_path)
    spares.refill(s)
    assert spares.wait_ready(WAIT)
    (spare,) = backend.spawned
    assert taps == {spare.nic.tap} and spare.nic.tap.startswith("farm-taps")
    assert spare.nic.mac == TEMPLATE_MAC
    guest = spares.take(s, "qemu3", "k3")
    assert guest is not None
    assert taps == {"farm-tap3"}
    assert guest.host == str(plan.ip_for(3)) and guest.nic.mac == mac_for(3)
    ((name, key, net),) = backend.identities
    assert (name, key) == ("qemu3", "k3")
    ip = f"{plan.ip_for(3)}/{plan.subnet.prefixlen}"
    assert net == {"mac": mac_for(3), "ip": ip, "gw": str(plan.bridge_ip)}
    guest.destroy()
    assert taps == set()
    spares.refill(s)
    assert spares.wait_ready(WAIT)
    with pytest.raises(ConfigError):  # a bridged machine is named with its id
        spares.take(s, "nameless", "k")
    assert backend.spawned[-1].destroyed.is_set() and taps == set()  # no stray spare
    spares.close()


def test_a_machine_tap_in_use_makes_the_spawn_restore(
    backend: FakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rename_tap refuses (farm-tapN is a live guest's: NetworkError): take() gives no guest
    (the spawn restores), the spare is destroyed with its own tap, farm-tapN is left alone."""
    plan = DhcpPlan.create()
    taps = {"farm-tap3"}  # a live guest's

    def refuse(old: str, new: str) -> None:
        raise NetworkError(f"tap {new} is in use (a live guest's?): {old} not renamed")

    _bridged(backend, plan, taps, refuse, monkeypatch)
    spares = spares_of(backend)
    s = snap(tmp_path)
    spares.refill(s)
    assert spares.wait_ready(WAIT)
    assert spares.take(s, "qemu3", "k3") is None
    assert backend.spawned[-1].destroyed.is_set() and taps == {"farm-tap3"}
    assert not backend.identities
    spares.close()
