"""Pretend targets, the session registry, the token helper and the simulator."""

from __future__ import annotations

import io
import itertools
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from farm import session as sessions
from farm.errors import ConfigError
from farm.events import Event, EventType
from farm.session import FileSession, StdioSession
from farm.session.base import AbstractSession, RunProgress
from farm.session.simulate import simulate, task_timeline
from farm.session.token import ensure_token_file, resolve_token
from tests.helpers import FakeTaskSet


def task(tid: int, **over: Any) -> dict[str, Any]:
    base = {"id": tid, "pkg": "hey", "config": {}, "priority": 10, "period": 10,
            "executiontime": 2, "criticaltime": 5, "offset": 0, "numberofjobs": 3}  # fmt: skip
    base.update(over)
    return base


def run_to_end(session: AbstractSession) -> list[Event]:
    events: list[Event] = []
    for _ in range(1000):
        if session.finished():
            return events
        events.extend(session.run(1.0))
    raise AssertionError("not finished")


# -- simulator ---------------------------------------------------------------------------


def test_timeline_start_exit_per_job_then_jobs_done() -> None:
    events = [e for _, e in task_timeline(task(2, numberofjobs=2, offset=5))]
    assert [(e.type, e.job) for e in events] == [
        (EventType.START, 0),
        (EventType.EXIT, 0),
        (EventType.START, 1),
        (EventType.EXIT, 1),
        (EventType.JOBS_DONE, None),
    ]
    assert [e.timestamp for e in events] == [0.005, 0.007, 0.015, 0.017, 0.017]


def test_late_job_exits_critical_and_unbounded_tasks_stream_lazily() -> None:
    late = [e for _, e in task_timeline(task(0, executiontime=8, criticaltime=5))]
    assert {e.type for e in late if e.is_exit} == {EventType.EXIT_CRITICAL}
    forever = simulate([task(0, numberofjobs=0), task(1, numberofjobs=1)])
    first = list(itertools.islice(forever, 1000))
    assert len(first) == 1000
    stamps = [t for t, _ in first]
    assert stamps == sorted(stamps)


# -- dry sessions ------------------------------------------------------------------------


def test_stdio_session_prints_description_and_events() -> None:
    out = io.StringIO()
    with StdioSession(stream=out) as session:
        session.start(FakeTaskSet([task(0), task(1, numberofjobs=1)]), {"optimize": {}})
        events = run_to_end(session)
    text = out.getvalue()
    assert '"pkg": "hey"' in text and "session parameters" in text
    assert sum(e.type is EventType.JOBS_DONE for e in events) == 2
    assert text.count(" START") == 4
    assert StdioSession.is_available("anything")


def test_file_session_writes_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "dry" / "session.jsonl"
    with FileSession("h", path=path) as session:
        session.start(FakeTaskSet([task(0, numberofjobs=2)]))
        events = run_to_end(session)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["taskset"] == {"tasks": [task(0, numberofjobs=2)]}
    assert [line["event"]["type"] for line in lines[1:]] == [str(e.type) for e in events]


def test_stop_ends_started_jobs_externally() -> None:
    with StdioSession(stream=io.StringIO(), time_scale=1.0) as session:
        session.start(FakeTaskSet([task(0, offset=0, period=60_000, executiontime=30_000)]))
        assert [e.type for e in session.run(1.0)] == [EventType.START]
        session.stop()
        assert [(e.type, e.job) for e in session.run(1.0)] == [(EventType.EXIT_EXTERNAL, 0)]
        assert session.run(0.01) == []
        assert not session.finished()


def test_run_honours_its_timeout_while_nothing_is_due() -> None:
    with StdioSession(stream=io.StringIO(), time_scale=1.0) as session:
        session.start(FakeTaskSet([task(0, offset=60_000)]))
        assert session.run(0.05) == []


def test_stop_from_another_thread_wakes_run() -> None:
    with StdioSession(stream=io.StringIO(), time_scale=1.0) as session:
        session.start(FakeTaskSet([task(0, offset=600_000)]))
        stopper = threading.Timer(0.05, session.stop)
        stopper.start()
        try:
            assert session.run(30.0) == []
        finally:
            stopper.cancel()
            stopper.join()


def test_progress_needs_every_task() -> None:
    progress = RunProgress([1, 2])
    assert not progress.finished
    progress.update([Event(1, None, EventType.JOBS_DONE, 0.0)])
    assert not progress.finished
    progress.update([Event(2, None, EventType.JOBS_DONE, 0.0)])
    assert progress.finished
    assert not RunProgress().finished


def test_task_set_without_tasks_is_refused() -> None:
    class Broken:
        def description(self) -> dict[str, Any]:
            return {}

        def binaries(self) -> dict[str, Path]:
            return {}

    with StdioSession(stream=io.StringIO()) as session, pytest.raises(ConfigError):
        session.start(Broken())


# -- registry ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "FarmSession",
        "session.FarmSession",
        "farm.session.FarmSession",
        "farm.session.agent:FarmSession",
        "agent.FarmSession",
    ],
)
def test_resolve_finds_farm_session(name: str) -> None:
    assert sessions.resolve(name) is sessions.FarmSession


def test_resolve_other_forms_and_errors() -> None:
    assert sessions.resolve("genode.GenodeSession") is sessions.GenodeSession
    assert sessions.resolve("dry.StdioSession") is StdioSession
    for bad in ("NoSuchSession", "nomodule:Class", "farm.session.base:RunProgress", ""):
        with pytest.raises(ConfigError):
            sessions.resolve(bad)


def test_available_lists_names_and_first_doc_lines() -> None:
    listed = dict(sessions.available())
    assert set(listed) == {"FarmSession", "GenodeSession", "StdioSession", "FileSession"}
    assert all(doc and "\n" not in doc for doc in listed.values())


# -- token -------------------------------------------------------------------------------


def test_token_resolution_order(tmp_path: Path) -> None:
    assert resolve_token("explicit", tmp_path, env={"FARM_TOKEN": "env"}) == "explicit"
    assert resolve_token(None, tmp_path, env={"FARM_TOKEN": "env"}) == "env"
    generated = resolve_token(None, tmp_path / "state", env={})
    assert len(generated) == 64
    assert resolve_token(None, tmp_path / "state", env={}) == generated
    mode = stat.S_IMODE(os.stat(tmp_path / "state" / "token").st_mode)
    assert mode == 0o600
    assert resolve_token(None, None, env={"FARM_STATE_DIR": str(tmp_path / "state")}) == generated


def test_token_files_agree_under_races(tmp_path: Path) -> None:
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_token(None, tmp_path, env={})))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


def test_empty_token_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ConfigError):
        ensure_token_file(tmp_path)
