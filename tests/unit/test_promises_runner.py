"""Promises of the agent's runner (farm/agent/runner.py docstring), checked on its events.

The runner is driven with a tiny launcher (``/bin/true``, or an OSError for chosen jobs) so
the tests check the documented rules for late releases, JOBS_DONE and spawn failures.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm.agent.jobs import Launch
from farm.agent.runner import Runner
from farm.agent.taskspec import TaskSpec

pytestmark = pytest.mark.unit

Events = list[dict[str, Any]]


def run(
    tmp_path: Path,
    tasks: list[TaskSpec],
    fail: set[int] = frozenset(),
    t0: float | None = None,
    argv: tuple[str, ...] = ("/bin/true",),
    stop_after: float | None = None,
) -> Events:
    """Run ``tasks`` to the end (or stop it after ``stop_after`` s); jobs whose index is in
    ``fail`` cannot be spawned."""
    events: Events = []
    lock = threading.Lock()

    def launcher(task: TaskSpec, index: int, plan: Any) -> Launch:
        if index in fail:
            raise OSError(f"cannot spawn job {index}")
        return Launch(list(argv), {"PATH": "/usr/bin:/bin"}, str(tmp_path), False, sched=plan)

    def emit(event: dict[str, Any]) -> None:
        with lock:
            events.append(event)

    runner = Runner(tasks, launcher, emit, t0=t0)
    runner.start()
    try:
        if stop_after is not None:
            time.sleep(stop_after)
            assert runner.stop(), "runner.stop() did not finish"
        assert runner.wait(20), "runner did not finish"
    finally:
        runner.stop()
    return events


def kinds(events: Events, task_id: int = 0) -> list[tuple[str, int | None]]:
    return [(e["type"], e["job"]) for e in events if e["task_id"] == task_id]


def test_a_release_reached_after_its_whole_window_is_not_scheduled(tmp_path: Path) -> None:
    """Releases whose window is already over when reached: NOT_SCHEDULED, never START."""
    task = TaskSpec(0, "shell", period=100, numberofjobs=3)
    events = run(tmp_path, [task], t0=time.monotonic() - 5.0)
    assert kinds(events) == [
        ("NOT_SCHEDULED", 0),
        ("NOT_SCHEDULED", 1),
        ("NOT_SCHEDULED", 2),
        ("JOBS_DONE", None),
    ]
    assert all("period" in e["detail"] for e in events if e["type"] == "NOT_SCHEDULED")


@pytest.mark.parametrize(
    "task",
    [
        TaskSpec(0, "shell", period=60, numberofjobs=2),  # last job ends inside its window
        TaskSpec(0, "shell", period=0, numberofjobs=3),  # back to back
        TaskSpec(0, "shell", period=0, numberofjobs=1),
    ],
    ids=["periodic", "back-to-back", "one-shot"],
)
def test_jobs_done_is_sent_exactly_once_and_last(tmp_path: Path, task: TaskSpec) -> None:
    events = run(tmp_path, [task])
    seen = kinds(events)
    assert seen.count(("JOBS_DONE", None)) == 1, seen
    assert seen[-1] == ("JOBS_DONE", None)
    starts = [job for kind, job in seen if kind == "START"]
    assert starts == list(range(task.numberofjobs))
    assert [kind for kind, _ in seen].count("EXIT") == task.numberofjobs


def test_two_tasks_each_send_one_jobs_done(tmp_path: Path) -> None:
    tasks = [TaskSpec(1, "shell", period=50, numberofjobs=2), TaskSpec(2, "shell", numberofjobs=2)]
    events = run(tmp_path, tasks)
    for task_id in (1, 2):
        seen = kinds(events, task_id)
        assert seen.count(("JOBS_DONE", None)) == 1 and seen[-1] == ("JOBS_DONE", None), seen


def test_spawn_failure_streak_resets_after_a_successful_spawn(tmp_path: Path) -> None:
    """Three spawn failures IN A ROW end a period-0 task; a good spawn resets the count."""
    task = TaskSpec(0, "shell", period=0, numberofjobs=6)
    events = run(tmp_path, [task], fail={0, 1, 3, 4})
    seen = [(k, j) for k, j in kinds(events) if k != "NOTICE"]
    assert seen == [
        ("NOT_SCHEDULED", 0),
        ("NOT_SCHEDULED", 1),
        ("START", 2),
        ("EXIT", 2),
        ("NOT_SCHEDULED", 3),
        ("NOT_SCHEDULED", 4),
        ("START", 5),
        ("EXIT", 5),
        ("JOBS_DONE", None),
    ]
    (done,) = [e for e in events if e["type"] == "JOBS_DONE"]
    assert not done["detail"]  # ended normally, not "gave up"


def test_three_spawn_failures_in_a_row_end_a_period_zero_task(tmp_path: Path) -> None:
    task = TaskSpec(0, "shell", period=0, numberofjobs=6)
    events = run(tmp_path, [task], fail={1, 2, 3})
    seen = kinds(events)
    assert seen[:2] == [("START", 0), ("EXIT", 0)]
    assert seen[2:] == [
        ("NOT_SCHEDULED", 1),
        ("NOT_SCHEDULED", 2),
        ("NOT_SCHEDULED", 3),
        ("JOBS_DONE", None),
    ]
    assert "gave up" in events[-1]["detail"]


def test_stop_kills_running_jobs_with_exit_external_and_no_jobs_done(tmp_path: Path) -> None:
    tasks = [TaskSpec(0, "shell", numberofjobs=3), TaskSpec(1, "shell", period=50, numberofjobs=40)]
    events = run(tmp_path, tasks, argv=("/bin/sleep", "30"), stop_after=0.3)
    assert kinds(events, 0) == [("START", 0), ("EXIT_EXTERNAL", 0)]
    seen = kinds(events, 1)
    assert ("JOBS_DONE", None) not in seen
    assert seen[-1][0] == "EXIT_EXTERNAL"
    assert [k for k, _ in seen].count("EXIT_EXTERNAL") == 1


def test_a_job_still_running_at_its_next_release_is_killed_with_exit_period(
    tmp_path: Path,
) -> None:
    task = TaskSpec(0, "shell", period=100, numberofjobs=2)
    events = run(tmp_path, [task], argv=("/bin/sleep", "30"))
    assert kinds(events) == [
        ("START", 0),
        ("EXIT_PERIOD", 0),
        ("START", 1),
        ("EXIT_PERIOD", 1),
        ("JOBS_DONE", None),
    ]
