"""Run records: monitors learn the submission key and replaces_finish without farm writing
onto the user's task-set objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from farm.core.records import RunRecord, SetState
from farm.monitors import taskset_job, taskset_label, taskset_replaces_finish
from farm.monitors.base import AbstractMonitor, current_run
from farm.monitors.thread import MonitorThread, NullMonitor

from .test_distributor import make, many

pytestmark = pytest.mark.unit


class Seen(AbstractMonitor):
    def __init__(self) -> None:
        self.labels: list[str] = []
        self.replaces: list[bool] = []
        self.attrs: list[bool] = []

    def __taskset_start__(self, taskset: Any) -> None:
        self.labels.append(taskset_label(taskset))
        self.replaces.append(taskset_replaces_finish(taskset))
        self.attrs.append(hasattr(taskset, "job_id") or hasattr(taskset, "replaces_finish"))


def test_monitor_thread_passes_the_run_record() -> None:
    variant = next(iter(many(1).variants()))
    mon = Seen()
    wrapper = MonitorThread(mon)
    try:
        wrapper.started(RunRecord("sub-a", 0, variant, replaces_finish=True))
        wrapper.flush()
    finally:
        wrapper.close()
    assert mon.labels == ["sub-a#0"]
    assert mon.replaces == [True]
    assert current_run() is None  # only while a hook runs, and only on its thread


def test_outside_a_run_the_helpers_read_the_object() -> None:
    variant = next(iter(many(1).variants()))
    assert taskset_job(variant) == variant.name
    assert taskset_replaces_finish(variant) is False


def test_distributor_leaves_user_objects_alone(tmp_path: Path) -> None:
    dist, _ = make(tmp_path)
    mon = Seen()
    try:
        job = dist.add_job(many(3), mon, name="mine")
        assert dist.wait_finished(timeout=30)
    finally:
        dist.close()
    assert sorted(mon.labels) == ["mine#0", "mine#1", "mine#2"]
    assert mon.attrs == [False, False, False]
    assert job.key == "mine"


def test_null_monitor_implements_every_hook() -> None:
    null = NullMonitor()
    run = RunRecord("k", 0, next(iter(many(1).variants())))
    null.started(run)
    null.stopped(run)
    null.bad(run, 1)
    called: list[int] = []
    null.then(lambda: called.append(1))
    assert called == [1] and null.flush()
    assert not hasattr(null, "__getattr__")


def test_set_states_are_the_stored_strings() -> None:
    assert [str(s) for s in SetState] == ["started", "finishing", "finished", "stopped", "bad"]


def test_a_nested_monitor_thread_keeps_the_run_record() -> None:
    variant = next(iter(many(1).variants()))
    mon = Seen()
    inner = MonitorThread(mon)
    outer = MonitorThread(inner, close_monitor=False)
    try:
        outer.started(RunRecord("sub-b", 0, variant))
        outer.flush()
        inner.flush()
    finally:
        outer.close()
        inner.close()
    assert mon.labels == ["sub-b#0"]
