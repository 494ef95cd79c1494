"""A NetJobs test as a farm task set, so any farm monitor (SqliteMonitor ...) can record it.

Mapping onto the one event taxonomy (no new event types): a test is a task
set (job ``netjobs:<label>``); target line *i* is task *i* (pkg ``shell``,
one job) whose command runs once. Per task: ``START`` at the agent's start
instant, then an exit event, ``EXIT`` for SUCCESS, ``EXIT_ERROR`` for ERROR,
``EXIT_EXTERNAL`` for TIMEOUT and KILLED, its detail beginning with the
NetJobs status; a ``NOTICE`` whose detail is the whole output; ``JOBS_DONE``.
A set-level ``NOTICE`` (task -1) gives the start skew. The test ends with
``__taskset_finish__`` if it passed, else ``__taskset_bad__(taskset, 1)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from farm.events import Event, EventType
from farm.netjobs.report import format_skew
from farm.netjobs.runner import Status, TestResult

log = logging.getLogger(__name__)

SET_TASK_ID = -1
_EXIT = {
    Status.SUCCESS: EventType.EXIT,
    Status.ERROR: EventType.EXIT_ERROR,
    Status.TIMEOUT: EventType.EXIT_EXTERNAL,
    Status.KILLED: EventType.EXIT_EXTERNAL,
}


class NetJobsTaskSet:
    """A finished NetJobs test seen as a task set (what monitors read)."""

    def __init__(self, result: TestResult) -> None:
        """Describe ``result``; ``job_id`` is ``netjobs:<label>``, no variant index."""
        self.result = result
        self.job_id = f"netjobs:{result.label}"
        self.name = self.job_id

    def description(self) -> dict[str, Any]:
        """``{"tasks": [...], "netjobs": {...}}``: one shell task per target line."""
        r = self.result
        return {
            "tasks": [
                {
                    "id": i,
                    "pkg": "shell",
                    "numberofjobs": 1,
                    "config": {
                        "command": t.command,
                        "target": t.target,
                        "address": t.address,
                        "timeout": t.timeout,
                    },
                }
                for i, t in enumerate(r.results)
            ],
            "netjobs": {"label": r.label, "minhosts": r.minhosts, "skew": r.skew},
        }

    def binaries(self) -> Mapping[str, Path]:
        """A NetJobs test uploads nothing."""
        return {}

    def events(self) -> list[Event]:
        """The test's events, in order (see the module docstring)."""
        r = self.result
        out = [
            Event(SET_TASK_ID, None, EventType.NOTICE, r.began_wall,
                  f"netjobs start skew {format_skew(r.skew)}", {"skew": r.skew})
        ]  # fmt: skip
        for i, t in enumerate(r.results):
            ts = t.started_wall if t.started_wall is not None else r.began_wall
            end_ts = ts + (t.duration or 0.0)
            info = {"status": str(t.status), "exit_code": t.exit_code, "target": t.target}
            if t.started is not None:
                out.append(Event(i, 0, EventType.START, ts, None, {"target": t.target}))
            status = t.status or Status.ERROR
            detail = f"{status}" + (f" exit {t.exit_code}" if t.exit_code is not None else "")
            if t.detail:
                detail += f": {t.detail}"
            out.append(Event(i, 0, _EXIT[status], end_ts, detail, info))
            if t.output:
                out.append(Event(i, None, EventType.NOTICE, end_ts, t.output, {"output": True}))
            out.append(Event(i, None, EventType.JOBS_DONE, end_ts))
        return out


def report_to_monitor(monitor: Any, result: TestResult) -> NetJobsTaskSet:
    """Hand one test to a monitor (hooks it lacks are skipped; its errors only logged)."""
    taskset = NetJobsTaskSet(result)

    def call(hook: str, *args: Any) -> None:
        method = getattr(monitor, hook, None)
        if method is None:
            return
        try:
            method(taskset, *args)
        except Exception:
            log.exception("monitor %r failed in %s", monitor, hook)

    call("__taskset_start__")
    for event in taskset.events():
        call("__taskset_event__", event)
    if result.passed:
        call("__taskset_finish__")
    else:
        call("__taskset_bad__", 1)
    return taskset


__all__ = ["NetJobsTaskSet", "report_to_monitor"]
