"""What a slot does between a set's last event and the next set's start request (issue 18).

The guest idles from its JOBS_DONE until the next start request reaches it, so
that stretch holds only what the request needs: the monitor gets a batch of
events as one queued call, the "started" hook and log line come after the
request (the "started" line at DEBUG: one INFO line per set), the "finished"
line is written when the set is settled (on the monitor's thread), and no
alive() is asked before the request (the BootWatch covers a dead or stopped
guest). The order monitors see is unchanged.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from farm.core.ports import Assignment
from farm.core.records import RunRecord
from farm.core.slot import Slot
from farm.events import Event, EventType
from farm.monitors import AbstractMonitor
from farm.monitors.base import current_run
from farm.monitors.thread import MonitorThread
from tests.helpers import RecordingMonitor

from .test_distributor import make, many

pytestmark = pytest.mark.unit


def _event(kind: EventType, task: int = 0) -> Event:
    return Event(task_id=task, job=0, type=kind, timestamp=1.0)


class _Calls:
    """One ordered list of what the fakes below were asked, across all of them."""

    def __init__(self) -> None:
        self.order: list[str] = []


class _Session:
    """Finishes each set after one batch of events; records start()."""

    def __init__(self, calls: _Calls, batch: list[Event]) -> None:
        self.calls = calls
        self.batch = batch
        self._done = True

    def start(self, taskset: Any, *params: Any) -> None:
        self.calls.order.append("start")
        self._done = False

    def finished(self) -> bool:
        return self._done

    def run(self, timeout: float) -> list[Event]:
        self._done = True
        return list(self.batch)


class _Guest:
    def __init__(self, calls: _Calls) -> None:
        self.calls = calls

    def alive(self) -> bool:
        self.calls.order.append("alive")
        return True

    def describe(self) -> str:
        return "fake"


class _Monitor:
    """A MonitorPort recording each call (events() as one entry per batch)."""

    def __init__(self, calls: _Calls) -> None:
        self.calls = calls
        self.batches: list[list[Event]] = []

    def started(self, run: RunRecord) -> None:
        self.calls.order.append("monitor.started")

    def event(self, run: RunRecord, event: Event) -> None:
        self.calls.order.append("monitor.event")

    def events(self, run: RunRecord, events: list[Event]) -> None:
        self.calls.order.append("monitor.events")
        self.batches.append(list(events))

    def hold(self) -> None:
        self.calls.order.append("monitor.hold")

    def release(self) -> None:
        self.calls.order.append("monitor.release")


class _Variant:
    index = 0

    def __init__(self) -> None:
        self.recorded: list[Event] = []

    def record(self, event: Event) -> None:
        self.recorded.append(event)


def _slot(calls: _Calls, batch: list[Event]) -> Slot:
    env: Any = type("Env", (), {"config": type("Cfg", (), {"set_time_limit": None})()})()
    slot = Slot(env, port=None, name="qemu1")  # type: ignore[arg-type]
    slot.session = _Session(calls, batch)  # type: ignore[assignment]
    slot.guest = _Guest(calls)  # type: ignore[assignment]
    return slot


def test_start_request_goes_out_before_the_hook_log_line_and_any_alive_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = _Calls()
    slot = _slot(calls, [_event(EventType.JOBS_DONE)])

    class _Log(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "started" in record.getMessage():
                calls.order.append("log.started")

    handler = _Log()
    slot.log.addHandler(handler)
    slot.log.setLevel(logging.DEBUG)  # the "started" line is DEBUG: one INFO line per set
    try:
        monitor = _Monitor(calls)
        run = RunRecord("job", 0, _Variant())  # type: ignore[arg-type]
        assert slot._drive(Assignment(run, monitor)) is False  # type: ignore[arg-type]
    finally:
        slot.log.removeHandler(handler)
    assert calls.order[0] == "start"  # nothing (alive() included) delays the request
    assert calls.order.index("monitor.started") < calls.order.index("monitor.events")
    assert calls.order.index("log.started") > calls.order.index("start")
    # the set's last batch is held back for the next start request (released by _serve)
    assert calls.order[-2:] == ["monitor.hold", "monitor.events"]
    slot._release_held()
    assert calls.order[-1] == "monitor.release"


def test_a_batch_of_events_reaches_the_monitor_port_as_one_call_in_order() -> None:
    calls = _Calls()
    batch = [_event(EventType.START), _event(EventType.EXIT), _event(EventType.JOBS_DONE)]
    slot = _slot(calls, batch)
    monitor = _Monitor(calls)
    variant = _Variant()
    run = RunRecord("job", 0, variant)  # type: ignore[arg-type]
    slot._drive(Assignment(run, monitor))  # type: ignore[arg-type]
    assert monitor.batches == [batch]
    assert "monitor.event" not in calls.order
    assert variant.recorded == batch  # the task set still counts every event


class _Seen(AbstractMonitor):
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        self.seen.append((event.type.value, current_run(taskset)))


def test_monitor_thread_queues_a_batch_as_one_item_and_calls_the_hook_per_event() -> None:
    seen = _Seen()
    wrapped = MonitorThread(seen)
    try:
        run = RunRecord("job", 3, _Variant())  # type: ignore[arg-type]
        batch = [_event(EventType.START), _event(EventType.EXIT), _event(EventType.JOBS_DONE)]
        before = wrapped._submitted
        wrapped.events(run, batch)
        wrapped.events(run, [])  # an empty batch queues nothing
        assert wrapped._submitted == before + 1  # one wake-up of the worker, not three
        assert wrapped.flush(10)
    finally:
        wrapped.close(10)
    assert seen.seen == [("START", run), ("EXIT", run), ("JOBS_DONE", run)]


def test_finished_log_line_is_written_once_the_monitor_saw_the_set(tmp_path: Path) -> None:
    seen_finish = threading.Event()
    lines: list[tuple[str, bool]] = []

    class _Mon(RecordingMonitor):
        def __taskset_finish__(self, taskset: Any) -> None:
            super().__taskset_finish__(taskset)
            seen_finish.set()

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.endswith(" finished") and message.startswith("set "):
                lines.append((record.threadName or "", seen_finish.is_set()))

    handler = _Catch()
    slot_log = logging.getLogger("farm.core.slot")
    slot_log.addHandler(handler)
    old_level = slot_log.level
    slot_log.setLevel(logging.INFO)
    dist, _ = make(tmp_path)
    try:
        dist.add_job(many(1), _Mon())
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
        slot_log.removeHandler(handler)
        slot_log.setLevel(old_level)
    # written by the monitor's worker after the finish hook, not by the slot before it
    assert lines == [(lines[0][0], True)] and lines[0][0].startswith("monitor-")


def test_held_calls_are_queued_in_order_as_one_item_on_release() -> None:
    seen = _Seen()
    wrapped = MonitorThread(seen)
    settled: list[str] = []
    try:
        run = RunRecord("job", 1, _Variant())  # type: ignore[arg-type]
        before = wrapped._submitted
        wrapped.hold()
        wrapped.events(run, [_event(EventType.EXIT), _event(EventType.JOBS_DONE)])
        wrapped.finished(run)
        wrapped.then(lambda: settled.append("settled"))
        assert wrapped._submitted == before and wrapped.flush(10) and seen.seen == []
        wrapped.release()
        assert wrapped._submitted == before + 1  # one wake-up of the worker
        assert wrapped.flush(10)
        wrapped.events(run, [_event(EventType.START)])  # released: queued at once again
        assert wrapped.flush(10)
    finally:
        wrapped.close(10)
    assert seen.seen == [("EXIT", run), ("JOBS_DONE", run), ("START", run)]
    assert settled == ["settled"]


def test_a_callback_held_past_close_still_runs() -> None:
    wrapped = MonitorThread(_Seen())
    ran: list[int] = []
    wrapped.hold()
    wrapped.then(lambda: ran.append(1))
    wrapped.close(10)
    wrapped.release()
    assert ran == [1]


def test_the_port_calls_idle_without_its_lock_before_it_waits_for_work(tmp_path: Path) -> None:
    from farm.core.pool import SlotPool

    env: Any = type("Env", (), {"config": type("Cfg", (), {"idle_linger": 0.0})()})()
    pool = SlotPool(env, limit=1)
    slot: Any = type("Handle", (), {"retiring": False, "machine_name": "qemu1"})()
    unlocked: list[bool] = []

    def take_lock() -> None:
        if pool.cond.acquire(timeout=5):
            unlocked.append(True)
            pool.cond.release()
        else:
            unlocked.append(False)

    def idle() -> None:  # another thread can take the lock meanwhile
        got = threading.Thread(target=take_lock)
        got.start()
        got.join()

    assert pool.acquire(slot, idle) is None  # no work, no linger: it shuts down
    assert unlocked == []  # it never had to wait: idle is only for a wait
    env.config.idle_linger = 0.2
    pool.paused = False
    calls: list[int] = []

    def idle_then_pause() -> None:
        idle()
        calls.append(1)
        pool.paused = True  # re-checked after idle(): the slot shuts down without waiting

    assert pool.acquire(slot, idle_then_pause) is None
    assert calls == [1] and unlocked == [True]
