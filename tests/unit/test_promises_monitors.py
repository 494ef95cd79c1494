"""Promises of the results store and of the variant generator.

* SqliteMonitor: a job's row records how the job ENDED; NOTICE events (traffic statistics
  carry a job number) and JOBS_DONE are kept as events but never end or overwrite a job.
* Variants: a one-shot first dimension (a generator) is consumed once and NOT cached, so a
  farm fed an endless generator keeps memory flat (farm/taskset/variants.py docstring).
"""

from __future__ import annotations

import gc
import itertools
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.events import Event, EventType
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet
from tests.helpers import query

pytestmark = pytest.mark.unit


class Variant:
    """A concrete variant as the Distributor hands it out."""

    def __init__(self, index: int = 0, job_id: str = "job-n") -> None:
        self.index = index
        self.job_id = job_id
        self.name = job_id

    def description(self) -> dict[str, Any]:
        task = {"id": 1, "pkg": "iperf", "config": {}, "priority": 0, "period": 0}
        task.update({"executiontime": 0, "criticaltime": 0, "deadline": 0, "offset": 0})
        task.update({"numberofjobs": 1, "quota": 0})
        return {"tasks": [task]}


def stats(job: int, ts: float) -> Event:
    return Event(1, job, EventType.NOTICE, ts, 'traffic stats {"bytes":1000}', {"stats": {}})


def test_traffic_stats_notices_never_end_a_job(tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    mon = SqliteMonitor(db)
    variant = Variant()
    try:
        mon.__taskset_start__(variant)
        mon.__taskset_event__(variant, Event(1, 0, EventType.START, 0.0))
        mon.__taskset_event__(variant, stats(0, 0.5))
        # a job still running after a stats line has no end yet
        assert query(db, "SELECT job, start_ts, end_ts, exit_type FROM jobs") == [
            (0, 0.0, None, None)
        ]
        mon.__taskset_event__(variant, Event(1, 0, EventType.EXIT, 1.0, "exit 0"))
        mon.__taskset_event__(variant, stats(0, 1.1))  # a late stats line of the ended job
        mon.__taskset_event__(variant, Event(1, None, EventType.JOBS_DONE, 1.2))
        mon.__taskset_finish__(variant)
    finally:
        mon.close()
    assert query(db, "SELECT job, start_ts, end_ts, exit_type, detail FROM jobs") == [
        (0, 0.0, 1.0, "EXIT", "exit 0")
    ]
    types = query(db, "SELECT type FROM events ORDER BY id")
    assert [t for (t,) in types] == ["START", "NOTICE", "EXIT", "NOTICE", "JOBS_DONE"]
    assert query(db, "SELECT state FROM tasksets") == [("finished",)]


class Token:
    """A dimension value whose lifetime the test can watch (weakref-able)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Token({self.n})"


def test_a_one_shot_first_dimension_is_not_cached(tmp_path: Path) -> None:
    made: list[weakref.ref[Token]] = []

    def tokens() -> Iterator[Token]:
        for n in itertools.count():
            token = Token(n)
            made.append(weakref.ref(token))
            yield token

    taskset = TaskSet([Task({"pkg": "hey", "x-token": tokens(), "x-run": range(2)})])
    variants = iter(taskset.variants())
    seen = []
    for variant in itertools.islice(variants, 40):
        seen.append((variant.index, variant.tasks[0]["x-token"].n, variant.tasks[0]["x-run"]))
        del variant
    # the generator varies slowest, the range fastest
    assert seen == [(i, i // 2, i % 2) for i in range(40)]
    gc.collect()
    alive = [ref() for ref in made[:-2]]
    assert alive.count(None) == len(alive), "values of the first (one-shot) dimension are kept"
    del variants


def test_a_second_one_shot_dimension_is_replayed(tmp_path: Path) -> None:
    """The documented other half: later one-shot dimensions are cached so they can repeat."""
    taskset = TaskSet([Task({"pkg": "hey", "x-a": iter(["a", "b"]), "x-b": (n for n in range(3))})])
    got = [(v.tasks[0]["x-a"], v.tasks[0]["x-b"]) for v in taskset.variants()]
    assert got == [(a, b) for a in "ab" for b in range(3)]


def test_a_stopped_attempt_stays_out_of_the_results(tmp_path: Path) -> None:
    """A set stopped and run again: two runs, only the finished one's jobs are results."""
    from farm.monitors import FINISHED_NOT_ONCE

    db = tmp_path / "results.db"
    mon = SqliteMonitor(db)
    variant = Variant()
    try:
        for attempt, end in ((1, EventType.EXIT_EXTERNAL), (2, EventType.EXIT)):
            mon.__taskset_start__(variant)
            mon.__taskset_event__(variant, Event(1, 0, EventType.START, float(attempt)))
            mon.__taskset_event__(variant, Event(1, 0, end, attempt + 0.5))
            if attempt == 1:
                mon.__taskset_stop__(variant)
        mon.__taskset_finish__(variant)
    finally:
        mon.close()
    assert query(db, "SELECT attempt, state FROM runs ORDER BY attempt") == [
        (1, "stopped"),
        (2, "finished"),
    ]
    assert query(db, "SELECT state, tries FROM tasksets") == [("finished", 2)]
    assert query(db, "SELECT exit_type FROM results") == [("EXIT",)]
    assert query(db, FINISHED_NOT_ONCE) == []
