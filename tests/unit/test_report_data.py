"""farm report: numbers derived from real SqliteMonitor databases, and the page built from them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from farm.errors import ConfigError
from farm.events import Event, EventType
from farm.monitors import SqliteMonitor
from farm.report.build import build_report, pick_detail
from farm.report.data import ReportData, SetData, load

E = EventType


class FakeVariant:
    """A variant as the Distributor hands it to monitors: job_id, index, description()."""

    def __init__(self, index: int, tasks: list[dict[str, Any]], job_id: str = "job-a") -> None:
        self.index = index
        self.job_id = job_id
        self._tasks = tasks

    def description(self) -> dict[str, Any]:
        return {"tasks": self._tasks}


def task(tid: int, period: float = 100, criticaltime: float = 0, **kw: Any) -> dict[str, Any]:
    return {
        "id": tid,
        "pkg": "hey",
        "config": {},
        "priority": 10,
        "period": period,
        "criticaltime": criticaltime,
        "deadline": 0,
        "offset": 0,
        "numberofjobs": 2,
        "executiontime": 0,
        "quota": 0,
        **kw,
    }


def job(tid: int, n: int, start: float | None, end: float | None, kind: E = E.EXIT) -> list[Event]:
    out = [] if start is None else [Event(tid, n, E.START, start)]
    return out + ([] if end is None else [Event(tid, n, kind, end, kind.value.lower())])


def run(
    mon: SqliteMonitor,
    v: FakeVariant,
    events: list[Event],
    end: str | None = "finish",
    tries: int = 3,
) -> None:
    mon.__taskset_start__(v)
    for ev in events:
        mon.__taskset_event__(v, ev)
    if end == "finish":
        mon.__taskset_finish__(v)
    elif end == "stop":
        mon.__taskset_stop__(v)
    elif end == "bad":
        mon.__taskset_bad__(v, tries)


@pytest.fixture
def db(tmp_path: Path) -> Any:
    path = tmp_path / "results.db"
    mon = SqliteMonitor(path)
    yield path, mon
    mon.close()


def only(data: ReportData) -> SetData:
    assert len(data.sets) == 1
    return data.sets[0]


def test_response_times_from_estimated_releases_and_misses_by_limit(db: Any) -> None:
    path, mon = db
    v = FakeVariant(0, [task(1), task(2, period=200, criticaltime=40)])
    events = [
        *job(1, 0, 10.020, 10.030),  # started 20 ms late: t0 comes from job 1
        *job(1, 1, 10.100, 10.150),  # 50 ms, no limit: no miss
        *job(2, 0, 10.021, 10.050),  # 50 ms > 40 ms although the exit says EXIT: a miss
        *job(2, 1, 10.200, 10.245, E.EXIT_CRITICAL),  # explicit miss
    ]
    run(mon, v, events)
    s = only(load(path))
    assert s.t0 == pytest.approx(10.0)
    resp = {(j.task_id, j.job): round(j.response * 1000, 3) for j in s.jobs if j.response}
    assert resp == {(1, 0): 30.0, (1, 1): 50.0, (2, 0): 50.0, (2, 1): 45.0}
    assert [(j.task_id, j.job) for j in s.jobs if j.missed] == [(2, 0), (2, 1)]
    assert (s.ended_jobs, s.misses, s.state, s.run_attempt) == (4, 2, "finished", 1)
    assert s.tasks[2].limit_ms == 40 and s.label == "job-a#0"


def test_skipped_overrun_and_cut_off_jobs(db: Any) -> None:
    path, mon = db
    v = FakeVariant(0, [task(1, numberofjobs=3)])
    events = [
        *job(1, 0, 5.0, 5.2, E.EXIT_PERIOD),  # overran its period: a miss
        *job(1, 1, None, 5.2, E.NOT_SCHEDULED),  # never started: a miss, no response
        *job(1, 2, 5.2, None),  # cut off: shown, not counted
    ]
    run(mon, v, events, end=None)
    s = only(load(path))
    kinds = [(j.exit_type, j.missed, j.response is None) for j in s.jobs]
    assert kinds == [
        ("EXIT_PERIOD", True, False),
        ("NOT_SCHEDULED", True, True),
        (None, False, True),
    ]
    assert s.jobs[1].release == pytest.approx(5.1)
    assert (s.state, s.run_state, s.ended_jobs, s.misses) == ("started", "running", 2, 2)
    page = build_report(path, path.parent / "out").read_text()  # draws all three kinds
    assert "did not finish (1)" in page and page.count("<img") == 3  # summary, responses, set


def test_finished_run_shown_after_stopped_attempts_and_summary_counts(db: Any) -> None:
    path, mon = db
    tasks = [task(1)]
    retried, bad, stopped = (FakeVariant(i, tasks) for i in range(3))
    run(mon, retried, job(1, 0, 1.0, 1.5, E.EXIT_ERROR), end="stop")
    run(mon, retried, [*job(1, 0, 2.0, 2.01), *job(1, 1, 2.1, 2.2, E.EXIT_CRITICAL)])
    for _ in range(2):
        run(mon, bad, job(1, 0, 3.0, None), end="stop")
    run(mon, bad, job(1, 0, 4.0, 4.01, E.EXIT_ERROR), end="bad", tries=3)
    run(mon, stopped, job(1, 0, 6.0, None), end="stop")
    run(mon, FakeVariant(0, tasks, job_id="pkg.mod.Other:abc"), job(1, 0, 7.0, 7.01))
    data = load(path)
    first = data.sets[0]
    assert (first.run_attempt, first.run_state, first.tries) == (2, "finished", 2)
    assert [(j.job, j.exit_type) for j in first.jobs] == [(0, "EXIT"), (1, "EXIT_CRITICAL")]
    assert (data.sets[1].state, data.sets[1].run_attempt, data.sets[1].tries) == ("bad", 3, 3)
    total = data.total
    assert dict(total.states) == {"finished": 2, "bad": 1, "stopped": 1}
    assert (total.jobs, total.misses, total.miss_rate) == (4, 1, 0.25)
    assert dict(total.exits) == {"EXIT": 2, "EXIT_CRITICAL": 1, "EXIT_ERROR": 1}
    a, other = data.by_job["job-a"], data.by_job["pkg.mod.Other:abc"]
    assert (a.sets, a.jobs, a.misses, other.name, other.sets, other.miss_rate) == (
        3,
        3,
        1,
        "Other",
        1,
        0.0,
    )
    assert data.sets[-1].label == "Other#0"


def test_empty_database_gives_a_page_without_charts(db: Any, tmp_path: Path) -> None:
    path, mon = db
    assert mon.connection is not None  # creates the schema, records nothing
    mon.close()
    data = load(path)
    assert data.sets == [] and data.total.miss_rate is None
    index = build_report(path, tmp_path / "out")
    page = index.read_text()
    assert 'id="empty"' in page and "<img" not in page


def test_not_a_results_database_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no results database"):
        load(tmp_path / "missing.db")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE t (x)")
    with pytest.raises(ConfigError, match="not a farm results database"):
        load(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all " * 100)
    with pytest.raises(ConfigError, match="cannot read"):
        load(junk)


def test_detail_is_capped_to_first_and_last_sets() -> None:
    sets = [SetData(i, "j", i, "finished", 1) for i in range(10)]
    chosen, gap, omitted = pick_detail(sets, 5)
    assert [s.id for s in chosen] == [0, 1, 2, 8, 9] and (gap, omitted) == (3, 5)
    assert pick_detail(sets, 20) == (sets, 10, 0)
    assert pick_detail(sets, 0)[0] == []
    with pytest.raises(ConfigError):
        pick_detail(sets, -1)


def test_page_inlines_its_charts_escapes_text_and_writes_pngs(db: Any, tmp_path: Path) -> None:
    path, mon = db
    tasks = [task(1), task(2, period=200, criticaltime=10)]
    for i in range(4):
        v = FakeVariant(i, tasks, job_id="x<script>alert(1)</script>")
        run(mon, v, [*job(1, 0, 1.0, 1.005), *job(2, 0, 1.0, 1.02, E.EXIT_CRITICAL)])
    index = build_report(path, tmp_path / "out", detail=3)
    page = index.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count('src="data:image/png;base64,iVBOR') == 3 + 3  # overview + 3 sets
    assert "1 task set not drawn in detail" in page
    files = sorted(p.name for p in index.parent.glob("*.png"))
    assert files == [
        "misses.png",
        "responses.png",
        "set-1.png",
        "set-2.png",
        "set-4.png",
        "summary.png",
    ]
    assert "http://" not in page and "https://" not in page  # no external assets
