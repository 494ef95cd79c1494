"""The spare bookkeeping both warm backends share (SparePool), with a pool of fakes.

The backends' own tests (test_qemu_spare, test_libvirt_spare) cover it through their
hooks; here the parts no backend makes easy to reach: a waiting spawn asks the hook to
lift the spare until it can, a failure after close() is not counted, a success resets
the count, a hand-over error restores while any other propagates, and close() destroys
the guest being made.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from farm.backend.base import Guest
from farm.backend.identity_port import SnapshotError, Spare
from farm.backend.snapshot import Snapshot
from farm.backend.spare_pool import MAX_FAILURES, SparePool
from farm.errors import BackendError, ConfigError

WAIT = 30.0


class FakeGuest(Guest):
    def __init__(self, name: str) -> None:
        self.name = name
        self.destroyed = threading.Event()

    def address(self, timeout: float) -> tuple[str, int]:
        return ("127.0.0.1", 0)

    def alive(self) -> bool:
        return not self.destroyed.is_set()

    def destroy(self) -> None:
        self.destroyed.set()


class FakePort:
    def close(self) -> None:
        pass


class Pool(SparePool[FakeGuest, FakePort]):
    """Builds a FakeGuest once ``gate`` opens (or raises ``fail``); lifts after ``lift_after``
    calls of :meth:`_lift`."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.fail: BaseException | None = None
        self.built: list[FakeGuest] = []
        self.lifts = 0
        self.lift_after = 1
        self.taking = True
        self.making: FakeGuest | None = None
        self.hand_over_error: BaseException | None = None

    def _build(self, snap: Snapshot, name: str) -> Spare[FakeGuest, FakePort] | None:
        guest = FakeGuest(name)
        with self._cond:
            self.making = guest
        self.built.append(guest)
        while not self.gate.wait(0.01):
            if guest.destroyed.is_set():
                raise BackendError(f"{name} destroyed")
        if self.fail is not None:
            raise self.fail
        return Spare(guest, FakePort(), snap.path)

    def _hand_over(self, spare: Spare[FakeGuest, FakePort], name: str, secret: str) -> FakeGuest:
        if self.hand_over_error is not None:
            spare.discard()
            raise self.hand_over_error
        spare.guest.name = name
        return spare.guest

    def _lift(self) -> bool:
        self.lifts += 1
        return self.lifts >= self.lift_after

    def _taking(self) -> bool:
        return self.taking

    def _being_made(self) -> FakeGuest | None:
        return self.making

    def _made(self) -> None:
        self.making = None


def snap(tmp_path: Path, name: str = "a") -> Snapshot:
    return Snapshot(tmp_path / f"{name}.bin", name, 1, "0")


def test_a_waiting_spawn_lifts_the_spare_until_it_can_then_takes_it(tmp_path: Path) -> None:
    pool = Pool()
    pool.gate.clear()
    pool.lift_after = 3  # e.g. the spare's QEMU has no pid yet
    pool.refill(snap(tmp_path))
    got: list[FakeGuest | None] = []
    taker = threading.Thread(target=lambda: got.append(pool.take(snap(tmp_path), "q1", "k")))
    taker.start()
    while True:
        with pool._cond:
            if pool.lifts >= 3:
                break
        threading.Event().wait(0.01)
    assert pool.take(snap(tmp_path), "q2", "k") is None  # one spawn waits: one spare
    pool.gate.set()
    taker.join(WAIT)
    assert got and got[0] is not None and got[0].name == "q1"
    assert pool.lifts == 3 and pool.waited == 1 and pool.used == 1
    assert pool.built[0].name == "q1"
    pool.close()


def test_a_spawn_the_backend_turns_away_neither_waits_nor_takes(tmp_path: Path) -> None:
    pool = Pool()
    pool.refill(snap(tmp_path))
    assert pool.wait_ready(WAIT)
    pool.taking = False
    assert pool.take(snap(tmp_path), "q1", "k") is None
    assert pool.waited == 0 and pool.used == 0 and pool._ready is not None
    pool.close()
    assert pool.built[0].destroyed.is_set()


def test_failures_count_until_spares_are_given_up_and_a_success_resets_them(
    tmp_path: Path,
) -> None:
    pool = Pool()
    pool.fail = SnapshotError("boom")
    for _ in range(MAX_FAILURES - 1):
        pool.refill(snap(tmp_path))
        assert not pool.wait_ready(WAIT)
    pool.fail = None
    pool.refill(snap(tmp_path))
    assert pool.wait_ready(WAIT) and pool._failures == 0 and pool.usable
    assert pool.take(snap(tmp_path), "q1", "k") is not None
    pool.fail = SnapshotError("boom again")
    for _ in range(MAX_FAILURES):
        pool.refill(snap(tmp_path))
        assert not pool.wait_ready(WAIT)
    assert pool.off == "boom again" and not pool.usable
    pool.refill(snap(tmp_path))
    assert len(pool.built) == 2 * MAX_FAILURES  # no more tried
    assert pool.take(snap(tmp_path), "q2", "k") is None
    pool.close()


def test_close_destroys_the_guest_being_made_and_its_failure_is_not_counted(
    tmp_path: Path,
) -> None:
    pool = Pool()
    pool.gate.clear()
    pool.refill(snap(tmp_path))
    while not pool.built:
        threading.Event().wait(0.01)
    pool.close()  # the maker fails at once (its guest destroyed): not a failed spare
    assert pool.built[0].destroyed.is_set() and pool._maker is None
    assert pool._failures == 0 and pool.usable
    pool.refill(snap(tmp_path))  # closed: no more
    assert len(pool.built) == 1


def test_a_hand_over_error_restores_and_any_other_propagates(tmp_path: Path) -> None:
    pool = Pool()
    pool.refill(snap(tmp_path))
    assert pool.wait_ready(WAIT)
    pool.hand_over_error = SnapshotError("identity port broke")
    assert pool.take(snap(tmp_path), "q1", "k") is None  # the spawn restores instead
    pool.refill(snap(tmp_path))
    assert pool.wait_ready(WAIT)
    pool.hand_over_error = ConfigError("no id in the machine's name")
    with pytest.raises(ConfigError):
        pool.take(snap(tmp_path), "q2", "k")
    assert pool.used == 0 and all(g.destroyed.is_set() for g in pool.built)
    pool.close()


def test_a_stale_spare_is_discarded(tmp_path: Path) -> None:
    pool = Pool()
    pool.refill(snap(tmp_path, "old"))
    assert pool.wait_ready(WAIT)
    assert pool.take(snap(tmp_path, "new"), "q1", "k") is None
    assert pool.built[0].destroyed.is_set() and pool.used == 0
    pool.close()


def test_a_latecomer_does_not_take_the_spare_a_waiting_spawn_waited_for(tmp_path: Path) -> None:
    """The spare is published while its waiting spawn has yet to get the lock back: a spawn
    that comes then restores its own instead of taking it (the waiter would get nothing,
    having waited, and pay a restore on top)."""
    pool, s = Pool(), snap(tmp_path)
    pool.refill(s)
    assert pool.wait_ready(WAIT)
    with pool._cond:
        pool._waiter = True  # a spawn waited for it and is about to take it
    assert pool.take(s, "qemu2", "k") is None
    assert pool._ready is not None and pool.used == 0
    with pool._cond:
        pool._waiter = False
    guest = pool.take(s, "qemu1", "k")
    assert guest is not None and guest.name == "qemu1"
    pool.close()


def test_spares_stay_at_normal_priority_where_idle_could_not_be_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Leaving SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE >= 20 - nice (Linux): without
    either, can_leave_idle() says so, and the backends then make spares without SCHED_IDLE."""
    from farm.backend import spare_pool

    monkeypatch.setattr(spare_pool, "_CAP_SYS_NICE", 63)  # as if this process lacked it
    for soft, nice, expect in ((0, 0, False), (20, 0, True), (10, 10, True), (9, 10, False)):
        monkeypatch.setattr(spare_pool.resource, "getrlimit", lambda _r, s=soft: (s, s))
        monkeypatch.setattr(spare_pool.os, "getpriority", lambda _w, _p, n=nice: n)
        spare_pool.can_leave_idle.cache_clear()
        assert spare_pool.can_leave_idle() is expect, (soft, nice)
    spare_pool.can_leave_idle.cache_clear()
