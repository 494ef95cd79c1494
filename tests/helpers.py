"""Small helpers shared by tests of several tiers."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from farm.monitors import AbstractMonitor

REPO = Path(__file__).resolve().parents[1]


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the SQLite database ``db`` (results.db, journal.db), closed after."""
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def run_farm(
    cwd: Path, *args: str, timeout: float = 180.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m farm.cli ARGS`` in ``cwd`` with this checkout first on the path, captured."""
    return subprocess.run(
        [sys.executable, "-m", "farm.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str, predicate: Callable[[], bool], timeout: float = 180.0, interval: float = 0.05
) -> None:
    """Poll ``predicate`` (test-side observation only) until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def farm_agents(tmp: Path) -> list[psutil.Process]:
    """Live agent processes of this test's farms (their command line names the dir)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            line = " ".join(proc.info["cmdline"] or [])
            if (
                "farm.agent" in line
                and str(tmp) in line
                and proc.info["status"] != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
    return found


class FakeTaskSet:
    """Minimal task set: description() and binaries() as farm.taskset.TaskSet has them."""

    def __init__(self, tasks: list[dict[str, Any]], binaries: dict[str, Path] | None = None):
        self.tasks = tasks
        self._binaries = binaries or {}

    def description(self) -> dict[str, Any]:
        return {"tasks": [dict(t) for t in self.tasks]}

    def binaries(self) -> dict[str, Path]:
        return dict(self._binaries)


class RecordingMonitor(AbstractMonitor):
    """Records hook calls by variant index (runs on the monitor's own thread)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []
        self.stopped: list[int] = []
        self.bad: list[tuple[int, int]] = []
        self.events = 0
        self.event_types: list[str] = []
        self.first_event = threading.Event()

    def __taskset_start__(self, taskset: Any) -> None:
        self.started.append(taskset.index)

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        self.events += 1
        self.event_types.append(str(event.type))
        self.first_event.set()

    def __taskset_finish__(self, taskset: Any) -> None:
        self.finished.append(taskset.index)

    def __taskset_stop__(self, taskset: Any) -> None:
        self.stopped.append(taskset.index)

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        self.bad.append((taskset.index, tries))


def feed(monitor: Any, variant: Any, *, finish: bool = True, t0: float = 0.0) -> None:
    """One attempt of a set on ``monitor``: start, two jobs of task 0 (guest times from
    ``t0``), JOBS_DONE, finish (unless ``finish`` is False)."""
    from farm.events import Event, EventType

    monitor.__taskset_start__(variant)
    for job in range(2):
        monitor.__taskset_event__(variant, Event(0, job, EventType.START, t0 + job))
        monitor.__taskset_event__(variant, Event(0, job, EventType.EXIT, t0 + job + 0.5))
    monitor.__taskset_event__(variant, Event(0, None, EventType.JOBS_DONE, t0 + 2))
    if finish:
        monitor.__taskset_finish__(variant)
