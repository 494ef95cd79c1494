"""Promises of the Distributor, checked through its public API on the fake backend.

Every test here guards one promise of the README/docstrings (FIFO jobs, re-queue at the
front, session parameters, retiring, stop, limits, retries, resume) so that a one-line
change of the core logic fails at least one of them. Only public names are used: the
Distributor's methods, FarmConfig, monitors and the shipped fake backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from farm import Distributor
from farm.backend.fake import FakeBackend, session_class_for
from farm.config import FarmConfig
from farm.errors import SessionError
from farm.monitors.base import AbstractMonitor, taskset_job
from farm.taskset import Task, TaskSet

pytestmark = pytest.mark.unit


class Recorder(AbstractMonitor):
    """Records every hook as (hook, job key, variant index), in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.bad: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()

    def _add(self, hook: str, taskset: Any) -> None:
        with self._lock:
            self.calls.append((hook, taskset_job(taskset), int(taskset.index)))

    def __taskset_start__(self, taskset: Any) -> None:
        self._add("start", taskset)

    def __taskset_finish__(self, taskset: Any) -> None:
        self._add("finish", taskset)

    def __taskset_stop__(self, taskset: Any) -> None:
        self._add("stop", taskset)

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        with self._lock:
            self.bad.append((taskset_job(taskset), int(taskset.index), tries))

    def of(self, hook: str, key: str | None = None) -> list[int]:
        """Variant indices seen by ``hook`` (of job ``key`` if given), in order."""
        with self._lock:
            return [i for h, k, i in self.calls if h == hook and (key is None or k == key)]

    def order(self, hook: str) -> list[tuple[str, int]]:
        with self._lock:
            return [(k, i) for h, k, i in self.calls if h == hook]


def sets(n: int, jobs: int = 2, period: int = 10) -> TaskSet:
    """``n`` variants of a periodic hey task (``jobs`` jobs of ``period`` ms each)."""
    task = {"pkg": "hey", "period": period, "numberofjobs": jobs, "x-run": range(n)}
    return TaskSet([Task(task)])


def session_class(
    backend: FakeBackend,
    *,
    scale: float = 0.001,
    gate: threading.Event | None = None,
    on_start: Callable[[Any, tuple[Any, ...]], None] | None = None,
) -> type:
    """A fake session: simulated time x ``scale``; connects once ``gate`` is set;
    ``on_start(variant, params)`` is called on every start (it may raise)."""

    class Session(session_class_for(backend)):  # type: ignore[misc]
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.time_scale = scale

        def connect(self, timeout: float | None = None, alive: Any = None) -> None:
            if gate is not None:
                gate.wait(10)
            super().connect(timeout, alive)

        def start(self, taskset: Any, *params: Any) -> None:
            if on_start is not None:
                on_start(taskset, params)
            super().start(taskset, *params)

    return Session


def farm(
    tmp_path: Path, backend: FakeBackend | None = None, session: type | None = None, **cfg: Any
) -> tuple[Distributor, FakeBackend]:
    backend = backend or FakeBackend()
    values: dict[str, Any] = {"idle_linger": 0.05, "heartbeat_timeout": 2.0}
    values.update(cfg)
    config = FarmConfig(state_dir=tmp_path / "state", log_dir=tmp_path / "log", **values)
    session = session or session_class(backend)
    return Distributor(config, backend=backend, session_class=session), backend


def until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# -- FIFO and re-queueing ------------------------------------------------------------------------


def test_jobs_run_oldest_first(tmp_path: Path) -> None:
    """README: jobs are FIFO, every variant of the oldest job goes out before the next job's."""
    gate = threading.Event()
    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend, session_class(backend, gate=gate))
    mon = Recorder()
    try:
        dist.add_job(sets(3), mon, name="first")
        dist.add_job(sets(3), mon, name="second")
        dist.add_job(sets(2), mon, name="third")
        gate.set()  # the one machine connects only once all three jobs are queued
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    expected = [("first", i) for i in range(3)] + [("second", i) for i in range(3)]
    assert mon.order("start") == [*expected, ("third", 0), ("third", 1)]


def test_failed_set_goes_back_to_the_front_of_its_job(tmp_path: Path) -> None:
    """A set that failed runs again before the job's later variants (not at the back)."""
    failed: list[int] = []

    def fail_once(variant: Any, params: tuple[Any, ...]) -> None:
        if variant.index == 1 and not failed:
            failed.append(1)
            raise SessionError("target dropped the set")

    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend, session_class(backend, on_start=fail_once), set_tries=3)
    mon = Recorder()
    try:
        dist.add_job(sets(5), mon)
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert mon.of("start") == [0, 1, 1, 2, 3, 4]
    assert mon.of("stop") == [1]
    assert sorted(mon.of("finish")) == [0, 1, 2, 3, 4]


def test_a_set_that_fails_goes_ahead_of_sets_that_failed_before_it(tmp_path: Path) -> None:
    """Front means front: with two failed sets queued, the one that failed last runs next."""
    backend = FakeBackend()
    both_running = threading.Barrier(2, timeout=5)
    starts: list[int] = []
    connects: dict[str, int] = {}
    holder: dict[str, Distributor] = {}

    def stopped() -> int:
        return sum(j["stopped"] for j in holder["dist"].jobs())

    def on_start(variant: Any, params: tuple[Any, ...]) -> None:
        starts.append(variant.index)
        if variant.index in (0, 1) and starts.count(variant.index) == 1:
            both_running.wait()  # 0 and 1 run at once, one per machine
            if variant.index == 1:
                until(lambda: stopped() == 1, 5)  # 1 fails after 0
            raise SessionError(f"set {variant.index} lost its target")

    class Session(session_class(backend, on_start=on_start)):  # type: ignore[misc]
        def connect(self, timeout: float | None = None, alive: Any = None) -> None:
            name = self.guest.name
            connects[name] = connects.get(name, 0) + 1
            if connects[name] > 1:  # a reboot: qemu1 takes the next set alone, qemu2 after it
                if name == "qemu1":
                    until(lambda: stopped() == 2, 5)
                else:
                    until(lambda: len(starts) >= 3, 5)
            super().connect(timeout, alive)

    dist, _ = farm(tmp_path, backend, Session, set_tries=3)
    holder["dist"] = dist
    mon = Recorder()
    try:
        dist.set_max_machine_value(2)
        dist.add_job(sets(6), mon)
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert sorted(starts[:2]) == [0, 1]
    assert starts[2:4] == [1, 0]  # the last failed first, then the one before it
    assert sorted(starts[4:]) == [2, 3, 4, 5]
    assert sorted(mon.of("finish")) == list(range(6))


def test_session_parameters_reach_the_target(tmp_path: Path) -> None:
    """add_job(taskset, monitor, *params): every start on the target gets exactly those params."""
    seen: list[tuple[int, tuple[Any, ...]]] = []
    params = ({"optimize": {"goal": "fairness"}}, "second", 3)
    backend = FakeBackend()
    on_start = lambda v, p: seen.append((v.index, p))  # noqa: E731
    dist, _ = farm(tmp_path, backend, session_class(backend, on_start=on_start))
    try:
        dist.add_job(sets(2), Recorder(), *params)
        dist.add_job(sets(1), Recorder(), name="no-params")
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert seen == [(0, params), (1, params), (0, ())]


# -- retiring, stopping --------------------------------------------------------------------------


def test_shut_down_all_machines_lets_the_running_set_finish(tmp_path: Path) -> None:
    """shut_down_all_machines retires: the running set finishes, nothing is stopped."""
    backend = FakeBackend()
    # 40 jobs x 10 ms at scale 1.0: the set runs ~0.4 s
    dist, _ = farm(tmp_path, backend, session_class(backend, scale=1.0))
    mon = Recorder()
    try:
        dist.add_job(sets(2, jobs=40), mon)
        assert until(lambda: mon.of("start") == [0])
        dist.shut_down_all_machines(wait=True)
        assert dist.machines() == []
        assert not backend.live_guests()
        assert until(lambda: mon.of("finish") == [0], 5)
        assert mon.of("stop") == []
        assert mon.of("start") == [0]  # paused: the second set waits
        (summary,) = dist.jobs()
        assert summary["finished"] == 1 and summary["stopped"] == 0 and not summary["done"]
    finally:
        dist.close()


def test_stop_cancels_queued_jobs(tmp_path: Path) -> None:
    """stop(): jobs not started yet are cancelled; none of their variants ever runs."""
    gate = threading.Event()
    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend, session_class(backend, gate=gate, scale=1.0))
    mon = Recorder()
    try:
        dist.add_job(sets(1, jobs=30), mon, name="running")
        dist.add_job(sets(3), mon, name="queued")
        gate.set()
        assert until(lambda: mon.of("start") == [0])
        dist.stop(wait=False)
        assert until(lambda: [j["done"] for j in dist.jobs() if j["key"] == "queued"] == [True], 2)
        time.sleep(0.5)  # the running set would be over by now: the machine takes nothing
        assert mon.of("start", "queued") == []
    finally:
        dist.close()
    assert mon.of("start", "queued") == []


@pytest.mark.timeout(30)
def test_stop_returns_promptly_with_the_running_set_stopped(tmp_path: Path) -> None:
    """taskgen's stop(wait=True): returns promptly, the running set is reported stopped,
    the machine stays up and goes idle."""
    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend, session_class(backend, scale=1.0), idle_linger=60.0)
    mon = Recorder()
    try:
        dist.add_job(sets(2, jobs=1000), mon)  # a set of ~10 s
        assert until(lambda: mon.of("start") == [0])
        done = threading.Event()
        stopper = threading.Thread(target=lambda: (dist.stop(wait=True), done.set()), daemon=True)
        stopper.start()
        assert done.wait(5), "stop(wait=True) did not return within 5 s"
        assert mon.of("stop") == [0] and mon.of("finish") == []
        machines = dist.machines()
        assert machines and all(m["current"] is None for m in machines)
        assert mon.of("start") == [0]
    finally:
        dist.close()


# -- limits, retries, boots ----------------------------------------------------------------------


def test_set_given_up_after_exactly_set_tries(tmp_path: Path) -> None:
    def poison(variant: Any, params: tuple[Any, ...]) -> None:
        if variant.index == 0:
            raise SessionError("target rejects this set")

    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend, session_class(backend, on_start=poison), set_tries=2)
    mon = Recorder()
    try:
        job_key = "poisoned"
        dist.add_job(sets(2), mon, name=job_key)
        assert dist.wait_finished(timeout=30)
        (summary,) = dist.jobs()
    finally:
        dist.close()
    assert mon.of("start") == [0, 0, 1]
    assert mon.of("stop") == [0, 0]
    assert mon.bad == [(job_key, 0, 2)]
    assert mon.of("finish") == [1]
    assert summary["bad"] == 1 and summary["finished"] == 1 and summary["done"]


def test_boot_retries_give_up(tmp_path: Path) -> None:
    """After boot_retries failed boots in a row the slot gives up: no further spawn."""
    dist, backend = farm(tmp_path, FakeBackend(fail_boots=100), boot_retries=2)
    try:
        dist.add_job(sets(1), Recorder())
        assert until(dist.stalled, 8)
        assert dist.wait_finished(timeout=5) is False
        time.sleep(0.3)
        assert backend.spawned == ["qemu1", "qemu1"]
    finally:
        dist.close()


def test_lowering_the_limit_retires_idle_machines_first(tmp_path: Path) -> None:
    """With one machine busy and one idle, lowering the limit to 1 retires the idle one at once."""
    backend = FakeBackend()
    # variant 0: 1 job (~10 ms), variant 1: 300 jobs (~3 s) at scale 1.0
    task = {"pkg": "hey", "period": 10, "numberofjobs": [1, 300]}
    dist, _ = farm(tmp_path, backend, session_class(backend, scale=1.0), idle_linger=60.0)
    mon = Recorder()
    try:
        dist.set_max_machine_value(2)
        dist.add_job(TaskSet([Task(task)]), mon)
        assert until(lambda: mon.of("finish") != [] and len(mon.of("start")) == 2)
        assert len(dist.machines()) == 2
        dist.set_max_machine_value(1)
        assert until(lambda: len(dist.machines()) == 1, 1.5)
        (left,) = dist.machines()
        assert left["current"] is not None  # the busy machine kept its set
        assert mon.of("stop") == []
    finally:
        dist.close()


def test_lowering_the_limit_is_honoured(tmp_path: Path) -> None:
    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend, session_class(backend, scale=0.3), idle_linger=0.5)
    mon = Recorder()
    try:
        dist.set_max_machine_value(3)
        dist.add_job(sets(60), mon)
        assert until(lambda: len(dist.machines()) == 3)
        dist.set_max_machine_value(2)
        assert until(lambda: len(dist.machines()) == 2, 5)
        peak = 0
        for _ in range(40):
            peak = max(peak, len(dist.machines()))
            time.sleep(0.005)
        assert peak <= 2
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert sorted(mon.of("finish")) == list(range(60))
    assert mon.of("stop") == []


def test_every_variant_finishes_exactly_once(tmp_path: Path) -> None:
    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend)
    mon = Recorder()
    try:
        dist.set_max_machine_value(2)
        dist.add_job(sets(12), mon)
        assert dist.wait_finished(timeout=30)
        (summary,) = dist.jobs()
    finally:
        dist.close()
    assert sorted(mon.of("finish")) == list(range(12))
    assert sorted(mon.of("start")) == list(range(12))
    assert summary["finished"] == 12 and summary["total"] == 12 and summary["done"]


def test_resume_runs_exactly_the_unsettled_variants(tmp_path: Path) -> None:
    """A second farm on the same journal runs exactly the variants the first did not settle."""
    reached, go = threading.Event(), threading.Event()

    def hold_third(variant: Any, params: tuple[Any, ...]) -> None:
        if variant.index == 1:
            raise SessionError("rejected")  # given up at once (set_tries=1): settled too
        if variant.index == 3:
            reached.set()
            go.wait(5)

    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend, session_class(backend, on_start=hold_third), set_tries=1)
    mon = Recorder()
    dist.add_job(sets(7), mon, name="resumable")
    assert reached.wait(10)
    dist.close(wait=False)  # the farm goes down while variant 3 runs
    go.set()
    assert dist.wait_closed(timeout=10)
    assert mon.of("finish") == [0, 2]
    assert [i for _, i, _ in mon.bad] == [1]

    backend2 = FakeBackend()
    dist2, _ = farm(tmp_path, backend2)
    mon2 = Recorder()
    try:
        dist2.add_job(sets(7), mon2, name="resumable")
        assert dist2.wait_finished(timeout=30)
        (summary,) = dist2.jobs()
    finally:
        dist2.close()
    assert summary["resumed_from"] == 3
    assert mon2.of("start") == [3, 4, 5, 6]
    assert mon2.of("finish") == [3, 4, 5, 6]


def test_resume_re_adds_the_unfinished_job(tmp_path: Path) -> None:
    """resume(): a new farm re-adds the journal's unfinished job and runs only what is left."""
    reached, go = threading.Event(), threading.Event()

    def hold(variant: Any, params: tuple[Any, ...]) -> None:
        if variant.index == 2:
            reached.set()
            go.wait(5)

    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend, session_class(backend, on_start=hold))
    mon = Recorder()
    dist.add_job(sets(4), mon, name="left-over")
    assert reached.wait(10)
    dist.close(wait=False)
    go.set()
    assert dist.wait_closed(timeout=10)

    gate = threading.Event()
    backend2 = FakeBackend()
    dist2, _ = farm(tmp_path, backend2, session_class(backend2, gate=gate))
    mon2 = Recorder()
    try:
        assert len(dist2.resume(mon2)) == 1
        assert dist2.resume(mon2) == []  # already queued: not added twice
        gate.set()
        assert dist2.wait_finished(timeout=30)
        assert dist2.resume(mon2) == []  # nothing unfinished is left
        (summary,) = dist2.jobs()
    finally:
        dist2.close()
    assert summary["key"] == "left-over" and summary["resumed_from"] == 2
    assert mon2.of("start") == [2, 3]


def test_a_killed_set_does_not_use_up_a_try(tmp_path: Path) -> None:
    """kill_all_machines re-queues the running set without counting it as a failed try."""
    backend = FakeBackend()
    dist, _ = farm(tmp_path, backend, session_class(backend, scale=0.3), set_tries=1)
    mon = Recorder()
    try:
        dist.add_job(sets(1, jobs=100), mon)  # ~0.3 s
        assert until(lambda: mon.of("start") == [0])
        dist.kill_all_machines()
        assert until(lambda: mon.of("stop") == [0], 5)
        assert mon.bad == []
        (summary,) = dist.jobs()
        assert not summary["done"] and summary["bad"] == 0
        dist.set_max_machine_value(1)  # resumes
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert mon.of("finish") == [0] and mon.bad == []
