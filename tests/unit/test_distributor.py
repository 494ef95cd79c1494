"""Distributor + Slot + Submission + Journal against FakeBackend/FakeGuestSession (no processes)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm import Distributor
from farm.backend.fake import FakeBackend, session_class_for
from farm.config import FarmConfig
from farm.errors import ConfigError, SessionError
from farm.taskset import Task, TaskSet
from farm.tasksets.example import Hey0TaskSet
from tests.helpers import RecordingMonitor


def many(n: int) -> TaskSet:
    """n variants of a short periodic hey task."""
    return TaskSet([Task({"pkg": "hey", "period": 10, "numberofjobs": 2, "x-run": range(n)})])


def make(
    tmp_path: Path, backend: FakeBackend | None = None, session: type | None = None, **cfg: Any
) -> tuple[Distributor, FakeBackend]:
    backend = backend or FakeBackend()
    defaults: dict[str, Any] = {"idle_linger": 0.05, "heartbeat_timeout": 2.0}
    defaults.update(cfg)
    config = FarmConfig(state_dir=tmp_path / "state", log_dir=tmp_path / "log", **defaults)
    dist = Distributor(config, backend=backend, session_class=session or session_class_for(backend))
    return dist, backend


def test_shell_flow_finishes_and_goes_idle(tmp_path: Path) -> None:
    dist, backend = make(tmp_path, log_file=True)  # pytest configures logging: "auto" would not
    mon = RecordingMonitor()
    try:
        dist.add_job(Hey0TaskSet(), mon)
        dist.set_max_machine_value(3)
        assert dist.wait_finished(timeout=30)
        assert sorted(mon.finished) == [0]
        deadline = time.monotonic() + 10
        while dist.get_distributor_state() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not dist.get_distributor_state()
        assert not backend.live_guests()
        assert (tmp_path / "log" / "distributor.log").read_text().count("finished") >= 1
    finally:
        dist.close()


@pytest.mark.parametrize("bad", [0, 8, -1, "3", 2.5, True, None])
def test_bad_limits_raise_naming_the_range(tmp_path: Path, bad: object) -> None:
    dist, _ = make(tmp_path)
    try:
        with pytest.raises(ValueError, match=r"1\.\.7"):
            dist.set_max_machine_value(bad)  # type: ignore[arg-type]
        assert dist.get_max_machine_value() == 1
    finally:
        dist.close()


def test_bad_config_rejected_before_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="backend"):
        FarmConfig(backend="vmware")
    with pytest.raises(ConfigError, match="libvirt_uri"):
        FarmConfig(libvirt_uri="not a uri")
    with pytest.raises(ConfigError, match="max_machines"):
        FarmConfig(max_machines=9)
    with pytest.raises(ConfigError, match="unknown config key"):
        FarmConfig.load(None, colour="blue")


def test_invalid_taskset_rejected_by_add_job(tmp_path: Path) -> None:
    dist, backend = make(tmp_path)
    try:
        with pytest.raises(ConfigError, match="period"):
            dist.add_job(TaskSet([Task({"pkg": "hey", "period": -5})]), RecordingMonitor())
        assert backend.spawned == []
    finally:
        dist.close()


def slow(backend: FakeBackend, scale: float) -> type:
    """Session class whose simulated time runs at ``scale`` x real time."""

    class Slow(session_class_for(backend)):  # type: ignore[misc]
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.time_scale = scale

    return Slow


def test_every_set_finished_exactly_once_under_crashes(tmp_path: Path) -> None:
    backend = FakeBackend()
    dist, _ = make(tmp_path, backend, slow(backend, 2.0), set_tries=50)
    mon = RecordingMonitor()
    stop = threading.Event()
    rng = random.Random(7)

    def chaos() -> None:
        while not stop.wait(0.03):
            guests = backend.live_guests()
            if guests:
                rng.choice(guests).crash()

    thread = threading.Thread(target=chaos)
    try:
        dist.set_max_machine_value(3)
        dist.add_job(many(30), mon)
        thread.start()
        assert dist.wait_finished(timeout=60)
    finally:
        stop.set()
        thread.join()
        dist.close()
    assert sorted(mon.finished) == list(range(30))
    assert len(mon.stopped) > 0
    assert mon.bad == []
    assert len(backend.spawned) > 3  # machines were respawned


def test_hung_guest_replaced(tmp_path: Path) -> None:
    dist, backend = make(tmp_path)
    mon = RecordingMonitor()
    try:
        dist.add_job(many(5), mon)
        deadline = time.monotonic() + 10
        while not backend.live_guests() and time.monotonic() < deadline:
            time.sleep(0.01)
        backend.live_guests()[0].hang()
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert sorted(mon.finished) == list(range(5))


def test_set_given_up_after_tries(tmp_path: Path) -> None:
    backend = FakeBackend()

    class PoisonedSession(session_class_for(backend)):  # type: ignore[misc]
        def start(self, taskset: Any, *params: Any) -> None:
            if taskset.index == 1:
                raise SessionError("target rejected this set")
            super().start(taskset, *params)

    dist, _ = make(tmp_path, backend, PoisonedSession, set_tries=3)
    mon = RecordingMonitor()
    try:
        dist.add_job(many(3), mon)
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert sorted(mon.finished) == [0, 2]
    assert mon.bad == [(1, 3)]
    assert mon.stopped.count(1) == 3


def test_boot_failures_back_off_then_recover(tmp_path: Path) -> None:
    dist, _backend = make(tmp_path, FakeBackend(fail_boots=2), boot_retries=5)
    mon = RecordingMonitor()
    try:
        dist.add_job(many(2), mon)
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert sorted(mon.finished) == [0, 1]


def test_boot_gives_up_and_reports(tmp_path: Path) -> None:
    dist, _ = make(tmp_path, FakeBackend(fail_boots=100), boot_retries=2)
    try:
        dist.add_job(many(2), RecordingMonitor())
        assert dist.wait_finished(timeout=30) is False  # stalled, not hanging
    finally:
        dist.close()


def test_lowering_limit_retires_after_current_set(tmp_path: Path) -> None:
    backend = FakeBackend()
    dist, _ = make(tmp_path, backend, slow(backend, 0.2), idle_linger=0.5)
    mon = RecordingMonitor()
    try:
        dist.set_max_machine_value(3)
        dist.add_job(many(40), mon)
        deadline = time.monotonic() + 10
        while len(dist.machines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(dist.machines()) == 3
        dist.set_max_machine_value(1)
        deadline = time.monotonic() + 10
        while len(dist.machines()) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(dist.machines()) == 1
        dist.set_max_machine_value(3)
        deadline = time.monotonic() + 10
        while (
            len(dist.machines()) < 3
            and time.monotonic() < deadline
            and dist.get_distributor_state()
        ):
            time.sleep(0.01)
        assert dist.wait_finished(timeout=60)
    finally:
        dist.close()
    assert sorted(mon.finished) == list(range(40))
    assert mon.stopped == []  # retiring never interrupts a set


def test_resume_runs_only_unfinished_variants(tmp_path: Path) -> None:
    backend = FakeBackend()
    mon1 = RecordingMonitor()
    dist, _ = make(tmp_path, backend, slow(backend, 1.0))  # ~10 ms a set: close() lands mid-job
    dist.add_job(many(20), mon1)
    deadline = time.monotonic() + 10
    while len(mon1.finished) < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    dist.close()  # interrupted mid-job
    done_first = set(mon1.finished)
    assert 0 < len(done_first) < 20

    mon2 = RecordingMonitor()
    dist2, _ = make(tmp_path, backend)
    try:
        job = dist2.add_job(many(20), mon2)
        assert job.skipped == len(done_first)
        assert dist2.wait_finished(timeout=30)
    finally:
        dist2.close()
    assert sorted(done_first | set(mon2.finished)) == list(range(20))
    assert not done_first & set(mon2.finished)


def test_kill_all_machines_requeues_and_pauses(tmp_path: Path) -> None:
    backend = FakeBackend()
    # each set lasts ~1 s: the kill finds both running even when this thread waits long
    # for the CPU (with ~50 ms sets, a loaded CI machine saw all four end before it)
    dist, _ = make(tmp_path, backend, slow(backend, 1.0))
    long_sets = TaskSet([Task({"pkg": "hey", "period": 500, "numberofjobs": 2, "x-run": range(4)})])
    mon = RecordingMonitor()
    try:
        dist.set_max_machine_value(2)
        dist.add_job(long_sets, mon)
        deadline = time.monotonic() + 10
        while len(mon.started) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        dist.kill_all_machines()
        assert dist.machines() == []
        assert not backend.live_guests()
        for m in dist._pool.monitors.values():
            m.flush()
        assert len(mon.stopped) >= 1
        dist.set_max_machine_value(2)  # resumes
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert sorted(mon.finished) == list(range(4))


def test_close_wakes_idle_machines(tmp_path: Path) -> None:
    """An idle machine waiting out a long linger must not hold up close()."""
    dist, backend = make(tmp_path, idle_linger=600.0)
    mon = RecordingMonitor()
    dist.add_job(many(1), mon)
    assert dist.wait_finished(timeout=30)
    dist.close(wait=False)
    assert dist.wait_closed(timeout=20)
    assert not backend.live_guests()


@pytest.mark.parametrize(
    "subnet", ["10.0.0.0/33", "abc/24", "10.0.0.1/24", "fd00::/64", "10.0.0.0/30"]
)
def test_bad_bridge_subnet_rejected(subnet: str) -> None:
    with pytest.raises(ConfigError, match="bridge_subnet"):
        FarmConfig(bridge_subnet=subnet)


class FakeCappedBackend(FakeBackend):
    """A fake multi-host backend: takes at most ``capacity`` guests (hosts down lower it)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.cap = capacity

    @property
    def capacity(self) -> int | None:
        return self.cap


def test_limit_is_capped_by_backend_capacity_and_refilled_when_a_host_returns(
    tmp_path: Path,
) -> None:
    backend = FakeCappedBackend(capacity=2)
    dist, _ = make(tmp_path, backend=backend)
    mon = RecordingMonitor()
    try:
        dist.set_max_machine_value(4)
        slow = {"pkg": "hey", "period": 10_000, "numberofjobs": 5, "x-run": range(100)}
        dist.add_job(TaskSet([Task(slow)]), mon)  # ~50 ms per set at the fake's time scale
        seen = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            seen = max(seen, len(dist.machines()))
            time.sleep(0.01)
        assert seen == 2  # no slot beyond what the hosts can take (it would only fail)
        assert backend.on_capacity_changed is not None  # the Distributor listens
        backend.cap = 4
        backend._capacity_grew()
        deadline = time.monotonic() + 10
        while len(dist.machines()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(dist.machines()) == 4
        assert dist.wait_finished(timeout=60)
        assert sorted(mon.finished) == list(range(100))
    finally:
        dist.close()
