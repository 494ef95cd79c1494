"""Pretend targets for dry runs: StdioSession and FileSession.

They run nothing, but they still produce each job's START, exit and the
tasks' JOBS_DONE (simulated by farm.session.simulate), so a Distributor and
its monitors work against them unchanged. ``time_scale`` is the number of wall
seconds per simulated second (0, the default: every event is due at once).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from farm.events import Event, EventType
from farm.session.base import AbstractSession, TaskSetLike
from farm.session.simulate import simulate


class SimulatedSession(AbstractSession):
    """Base of the pretend targets: simulates events, subclasses choose where to write."""

    #: Most events handed out by one run() call when everything is due at once.
    batch = 1000

    def __init__(
        self, host: str = "dry", port: int | None = None, *, time_scale: float = 0.0, **options: Any
    ) -> None:
        super().__init__(host, port, **options)
        self.time_scale = time_scale
        self._stream: Iterator[tuple[float, Event]] | None = None
        self._next: tuple[float, Event] | None = None
        self._began = 0.0
        self._open: dict[tuple[int, int], float] = {}
        self._queued: list[Event] = []
        self._wake = threading.Event()
        self._last_ms = 0.0

    def start(self, taskset: TaskSetLike, *params: Any) -> None:
        """Write the description, then simulate the set from now on."""
        tasks = self._begin(taskset)
        self._write_start(taskset.description(), list(params))
        self._stream = simulate(tasks)
        self._next = None
        self._open = {}
        self._queued = []
        self._last_ms = 0.0
        self._began = time.monotonic()
        self._wake.clear()

    def stop(self) -> None:
        """End the simulation; started jobs exit with EXIT_EXTERNAL."""
        self._stream = None
        self._next = None
        stamp = self._last_ms / 1000.0
        self._queued.extend(
            Event(task, job, EventType.EXIT_EXTERNAL, stamp, "stopped")
            for task, job in sorted(self._open)
        )
        self._open = {}
        self._wake.set()

    def _due_in(self, stamp_ms: float) -> float:
        return stamp_ms / 1000.0 * self.time_scale - (time.monotonic() - self._began)

    def _receive(self, timeout: float) -> list[Event]:
        events, self._queued = self._queued, []
        deadline = time.monotonic() + max(0.0, timeout)
        while self._stream is not None and len(events) < self.batch:
            if self._next is None:
                self._next = next(self._stream, None)
                if self._next is None:
                    self._stream = None
                    break
            stamp, event = self._next
            delay = self._due_in(stamp)
            if delay > 0:
                if events or time.monotonic() + delay > deadline:
                    if not events:
                        self._wake.wait(max(0.0, deadline - time.monotonic()))
                    break
                self._wake.wait(delay)
                continue
            self._next = None
            self._last_ms = stamp
            if event.type is EventType.START and event.job is not None:
                self._open[(event.task_id, event.job)] = stamp
            elif event.is_exit and event.job is not None:
                self._open.pop((event.task_id, event.job), None)
            events.append(event)
        if events:
            self._write_events(events)
        return events

    @abstractmethod
    def _write_start(self, description: dict[str, Any], params: list[Any]) -> None:
        """Show the task set being started."""

    @abstractmethod
    def _write_events(self, events: list[Event]) -> None:
        """Show events as they are handed out."""


class StdioSession(SimulatedSession):
    """Dry run on stdout: prints the description and the simulated events."""

    def __init__(
        self,
        host: str = "stdout",
        port: int | None = None,
        *,
        stream: IO[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(host, port, **options)
        self._out = stream

    @property
    def out(self) -> IO[str]:
        return self._out if self._out is not None else sys.stdout

    def _write_start(self, description: dict[str, Any], params: list[Any]) -> None:
        text = json.dumps(description, indent=2, sort_keys=True, default=str)
        self.out.write(f"== task set on {self.host}\n{text}\n")
        if params:
            self.out.write(f"== session parameters\n{json.dumps(params, default=str)}\n")
        self.out.flush()

    def _write_events(self, events: list[Event]) -> None:
        for e in events:
            job = "-" if e.job is None else e.job
            self.out.write(f"{e.timestamp:10.3f}s task {e.task_id} job {job} {e.type}\n")
        self.out.flush()


class FileSession(SimulatedSession):
    """Dry run into a file: one JSON line for the description, one per simulated event."""

    def __init__(
        self,
        host: str = "file",
        port: int | None = None,
        *,
        path: str | Path | None = None,
        **options: Any,
    ) -> None:
        super().__init__(host, port, **options)
        self.path = Path(path) if path is not None else Path("log") / f"session-{host}.jsonl"
        self._file: IO[str] | None = None

    def _handle(self) -> IO[str]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        return self._file

    def _write_start(self, description: dict[str, Any], params: list[Any]) -> None:
        line = {"taskset": description, "params": params, "wall_time": time.time()}
        self._handle().write(json.dumps(line, default=str) + "\n")
        self._handle().flush()

    def _write_events(self, events: list[Event]) -> None:
        handle = self._handle()
        handle.writelines(json.dumps({"event": e.to_dict()}) + "\n" for e in events)
        handle.flush()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
