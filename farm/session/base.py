"""The session interface every target speaks, and the per-run progress it keeps.

A session is the host side of one target (a farm agent, a Genode dom0, a
pretend target). A slot (farm.core.slot) drives it as::

    session = SomeSession(host, port, **options)   # records configuration only
    session.connect()                               # optional: start() connects too
    session.start(taskset, *params)
    while not session.finished():
        for event in session.run(timeout=1.0):      # SessionError when the target is lost
            ...
    session.start(next_taskset)                     # next set, same connection
    session.close()                                 # always; idempotent

Sessions only read the task set (``description()``, ``binaries()``); they never
record events into it: that is the caller's job (one writer, no double counts).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
)

from farm.errors import ConfigError
from farm.events import Event, EventType

log = logging.getLogger(__name__)


@runtime_checkable
class TaskSetLike(Protocol):
    """What a session needs from a task set (farm.taskset.TaskSet provides it)."""

    def description(self) -> dict[str, Any]:
        """``{"tasks": [ {"id", "pkg", "config", ...}, ... ]}``."""
        ...

    def binaries(self) -> Mapping[str, Path]:
        """Binaries to upload: name -> file."""
        ...


def task_descriptions(taskset: TaskSetLike) -> list[dict[str, Any]]:
    """The task dicts of a task set's description; ConfigError if it has none."""
    description = taskset.description()
    tasks = description.get("tasks") if isinstance(description, Mapping) else None
    if not isinstance(tasks, list):
        raise ConfigError(f"task set {taskset!r} has no 'tasks' list in its description")
    return tasks


def read_binaries(taskset: TaskSetLike) -> dict[str, bytes]:
    """Contents of every binary of a task set (name -> bytes)."""
    out: dict[str, bytes] = {}
    for name, source in dict(taskset.binaries()).items():
        if isinstance(source, bytes | bytearray):
            out[name] = bytes(source)
            continue
        try:
            out[name] = Path(source).read_bytes()
        except OSError as exc:
            raise ConfigError(f"binary {name!r} of {taskset!r} unreadable: {exc}") from exc
    return out


class Unreachable(Exception):
    """One connection attempt failed in a way worth retrying (refused, reset, timed out)."""


def retry_policy(
    *,
    attempts: int | None,
    deadline: float,
    wait: float,
    wait_max: float,
    interrupt: threading.Event,
    logger: logging.Logger,
) -> Retrying:
    """Tenacity policy for dialling a target: retry Unreachable with exponential waits,
    at most ``attempts`` times (None: no count limit) and ``deadline`` seconds.

    Waits end early when ``interrupt`` is set (the session was closed meanwhile).
    """

    def note(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.debug("connect attempt %d failed: %s", state.attempt_number, exc)

    def sleep(seconds: float) -> None:
        interrupt.wait(seconds)

    count = stop_never if attempts is None else stop_after_attempt(attempts)
    return Retrying(
        stop=count | stop_after_delay(deadline),
        wait=wait_exponential(multiplier=wait, max=wait_max),
        retry=retry_if_exception_type(Unreachable),
        sleep=sleep,
        before_sleep=note,
        reraise=True,
    )


class RunProgress:
    """Which tasks of the running set have sent JOBS_DONE; numbers jobs if asked."""

    def __init__(self, task_ids: Iterable[int] = ()) -> None:
        self.task_ids: frozenset[int] = frozenset(task_ids)
        self.done: set[int] = set()
        self._next_job: dict[int, int] = {}

    @property
    def finished(self) -> bool:
        """True once every task of the set sent JOBS_DONE (False for an empty set)."""
        return bool(self.task_ids) and self.task_ids <= self.done

    def update(self, events: Iterable[Event]) -> None:
        for event in events:
            if event.type is EventType.JOBS_DONE:
                self.done.add(event.task_id)

    def next_job(self, task_id: int) -> int:
        """Allocate the next job number of a task (0-based), for targets that send none."""
        job = self._next_job.get(task_id, 0)
        self._next_job[task_id] = job + 1
        return job

    def current_job(self, task_id: int) -> int | None:
        """Number of the task's most recently started job, None before its first."""
        job = self._next_job.get(task_id)
        return None if job is None else job - 1


class AbstractSession(ABC):
    """Host side of one target: start task sets on it and collect their events."""

    #: Default port of the target type (subclasses override).
    default_port: int = 0

    def __init__(self, host: str, port: int | None = None, **options: Any) -> None:
        """Record the configuration; no I/O happens here."""
        self.host = host
        self.port = self.default_port if port is None else int(port)
        self.options = dict(options)
        self.log = logging.getLogger(type(self).__module__).getChild(f"{host}:{self.port}")
        self.progress = RunProgress()
        self.taskset: TaskSetLike | None = None
        self._closed = False

    # -- construction ----------------------------------------------------------------

    @classmethod
    def factory(
        cls, *, token: str, heartbeat_timeout: float
    ) -> Callable[[str, int], AbstractSession]:
        """A (host, port) -> session builder for the Distributor's guests.

        Built once per Distributor; this default passes only the address. Sessions
        that authenticate or watch heartbeats (FarmSession) override it to pass
        ``token`` and ``heartbeat_timeout``.
        """

        def build(host: str, port: int) -> AbstractSession:
            return cls(host, port)

        return build

    # -- availability and connection -------------------------------------------------

    @classmethod
    def is_available(cls, host: str, port: int | None = None, timeout: float = 2.0) -> bool:
        """Cheap check whether a target of this type answers at host:port."""
        return True

    def connect(  # noqa: B027 - targets without a connection
        self, timeout: float | None = None, alive: Callable[[], bool] | None = None
    ) -> None:
        """Open the connection (start() calls it when needed); idempotent.

        ``timeout`` bounds the whole attempt, retries included (default: the
        session's own bound); ``alive`` is asked before every try: once it returns
        False the target is gone and connect() raises SessionError at once.
        """

    # -- running task sets -----------------------------------------------------------

    def interrupt(self, reason: str = "interrupted") -> None:  # noqa: B027 - optional
        """Make a waiting run() raise SessionError now (its machine is being killed)."""

    @abstractmethod
    def start(self, taskset: TaskSetLike, *params: Any) -> None:
        """Send the task set (and its session parameters) to the target and start it."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the running task set on the target."""

    def run(self, timeout: float) -> list[Event]:
        """New events since the last call, waiting at most ``timeout`` s for the first.

        Raises SessionError (lost connection) or SessionTimeout (target silent).
        """
        events = self._receive(timeout)
        self.progress.update(events)
        return events

    @abstractmethod
    def _receive(self, timeout: float) -> list[Event]:
        """Target-specific part of run()."""

    def finished(self) -> bool:
        """True when every task of the running set sent JOBS_DONE."""
        return self.progress.finished

    def _begin(self, taskset: TaskSetLike) -> list[dict[str, Any]]:
        """Common start() bookkeeping; returns the task descriptions."""
        tasks = task_descriptions(taskset)
        self.taskset = taskset
        self.progress = RunProgress(int(task["id"]) for task in tasks)
        return tasks

    # -- teardown --------------------------------------------------------------------

    def close(self) -> None:
        """Release the connection and any thread; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._close()

    def _close(self) -> None:  # noqa: B027 - nothing to release by default
        """Target-specific part of close() (called once)."""

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host!r}, {self.port})"
