"""The agent's requests (ops) and state, independent of sockets.

Ops, their ``args`` and results (errors are ``RequestError(code, message)``):

``ping`` {} -> ``{"ts": monotonic}``
``time`` {} -> ``{"monotonic": s, "monotonic_ns": ns, "wall": s}`` (for clock offsets)
``status`` {} -> ``{"running": bool, "tasks": [ids], "running_jobs": {id: job},
    "done": [ids], "t0": s|None, "params": [...], "binaries": [names],
    "agent_version": V, "uptime": s, "clients": n, "pid": n}``
``start`` ``{"tasks": [task dicts], "binaries": {name: base64}, "params": [...],
    "at": monotonic s (optional: start time of the set, for synchronised starts)}``
    -> ``{"t0": s, "tasks": [ids], "params": [...], "sched": {id: policy}}``.
    Errors: ``busy`` (a set is running), ``invalid_taskset``, ``bad_request``.
    Events of the set go to the client that started it; if that client goes
    away, the set is stopped (nobody would receive its events).
``stop`` {} -> ``{"stopped": true, "tasks": [ids]}`` once every job process is
    reaped (each running job got EXIT_EXTERNAL). Error ``not_running``.
``clear`` {} -> ``{"cleared": true, "stopped": bool}``: stop if running, forget
    uploaded binaries and the recorded params.

Session parameters (``params``) are recorded, returned by ``start`` and
``status``, and acknowledged by a NOTICE event with ``task_id`` -1 (the set as
a whole) and the parameters in its ``params`` field. This agent does not
enforce admission control itself; the NOTICE says so.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from farm.agent import commands, jobs, protocol, sched
from farm.agent.binaries import BadBinary, BinaryStore
from farm.agent.runner import Runner
from farm.agent.taskspec import InvalidTaskSet, TaskSpec, parse_taskset

log = logging.getLogger(__name__)

#: task_id of events about the task set as a whole
SET_TASK_ID = -1
STOP_TIMEOUT = 20.0
MAX_START_DELAY = 86400.0


class RequestError(Exception):
    """A request the agent answers with an error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Client(Protocol):
    """What the service needs of a connected, authenticated client."""

    name: str

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message to the client (never blocks)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request's result, and what to do once the reply has been queued."""

    result: Any
    then: Callable[[], None] | None = None


class AgentService:
    """Holds the agent's state (binaries, running set, params) and executes ops."""

    def __init__(self, workdir: Path) -> None:
        self.version = protocol.agent_version()
        self._started = time.monotonic()
        self._workdir = workdir
        self._jobdir = workdir / "jobs"
        self._jobdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._binaries = BinaryStore(workdir / "bin")
        self._lock = threading.Lock()
        self._runner: Runner | None = None
        self._owner: Client | None = None
        self._tasks: list[TaskSpec] = []
        self._params: list[Any] = []
        self._clients: set[Client] = set()
        self._ops: dict[str, Callable[[Client, dict[str, Any]], Outcome]] = {
            "ping": self._ping,
            "time": self._time,
            "status": self._status,
            "start": self._start,
            "stop": self._stop,
            "clear": self._clear,
        }

    @property
    def ops(self) -> frozenset[str]:
        """Names of the ops this agent understands."""
        return frozenset(self._ops)

    def attach(self, client: Client) -> None:
        """A client authenticated."""
        with self._lock:
            self._clients.add(client)

    def detach(self, client: Client) -> None:
        """A client went away; stop its task set if it owned the running one."""
        with self._lock:
            self._clients.discard(client)
            runner = self._runner if self._owner is client else None
        if runner is not None and not runner.finished:
            log.warning("client %s owning the running set left: stopping the set", client.name)
            runner.stop(STOP_TIMEOUT)

    def handle(self, client: Client, op: str, args: dict[str, Any]) -> Outcome:
        """Execute one op; raise RequestError for an error reply."""
        handler = self._ops.get(op)
        if handler is None:
            raise RequestError("unknown_op", f"unknown op {op!r}; known: {sorted(self._ops)}")
        return handler(client, args)

    def shutdown(self) -> None:
        """Stop the running set (if any) and forget everything."""
        with self._lock:
            runner = self._runner
        if runner is not None and not runner.stop(STOP_TIMEOUT):
            log.error("jobs of the running set were not all reaped at shutdown")
        self._binaries.clear()

    # -- ops -----------------------------------------------------------------

    def _ping(self, client: Client, args: dict[str, Any]) -> Outcome:
        return Outcome({"ts": time.monotonic()})

    def _time(self, client: Client, args: dict[str, Any]) -> Outcome:
        ns = time.monotonic_ns()
        return Outcome({"monotonic": ns / 1e9, "monotonic_ns": ns, "wall": time.time()})

    def _status(self, client: Client, args: dict[str, Any]) -> Outcome:
        with self._lock:
            runner = self._runner
            running = runner is not None and runner.active
            snap = runner.snapshot() if runner is not None else {}
            result = {
                "running": running,
                "tasks": snap.get("tasks", []),
                "running_jobs": snap.get("running_jobs", {}),
                "done": snap.get("done", []),
                "t0": snap.get("t0"),
                "params": self._params,
                "binaries": sorted(self._binaries.names()),
                "agent_version": self.version,
                "uptime": time.monotonic() - self._started,
                "clients": len(self._clients),
                "pid": os.getpid(),
            }
        return Outcome(result)

    def _start(self, client: Client, args: dict[str, Any]) -> Outcome:
        params = args.get("params", [])
        if params is None:
            params = []
        if isinstance(params, dict):
            params = [params]
        if not isinstance(params, list):
            raise RequestError("bad_request", "params must be a list of session parameters")
        at = args.get("at")
        now = time.monotonic()
        if at is not None and (
            isinstance(at, bool)
            or not isinstance(at, int | float)
            or not math.isfinite(at)
            or not now - 60 <= at <= now + MAX_START_DELAY
        ):
            raise RequestError("bad_request", "at must be an agent monotonic time in the next day")
        with self._lock:
            previous = self._runner
        if previous is not None and not previous.active:
            previous.wait(STOP_TIMEOUT)  # all done or stopped: its last jobs are being reaped
        with self._lock:
            if self._runner is not None and not self._runner.finished:
                raise RequestError("busy", "a task set is already running; stop it first")
            try:
                uploads = self._binaries.decode_all(args.get("binaries"))
            except BadBinary as exc:
                raise RequestError("bad_request", str(exc)) from exc
            try:
                tasks = parse_taskset(args.get("tasks"), self._binaries.names() | set(uploads))
            except InvalidTaskSet as exc:
                raise RequestError("invalid_taskset", str(exc)) from exc
            for name, data in uploads.items():
                self._binaries.put(name, data)
            paths = {name: self._binaries.path(name) for name in self._binaries.names()}

            def launcher(task: TaskSpec, index: int, plan: sched.SchedPlan) -> jobs.Launch:
                return commands.build_launch(task, index, plan, paths, self._jobdir)

            def emit(event: dict[str, Any]) -> None:
                client.send({"type": "event", "event": event})

            runner = Runner(tasks, launcher, emit, self._finished, t0=at)
            self._runner, self._owner = runner, client
            self._tasks, self._params = tasks, params
        result = {
            "t0": runner.t0,
            "tasks": [t.id for t in tasks],
            "params": params,
            "sched": {str(s["id"]): s["sched"] for s in runner.plans()},
        }

        def go() -> None:
            if params:
                emit(
                    {
                        "task_id": SET_TASK_ID,
                        "job": None,
                        "type": "NOTICE",
                        "ts": time.monotonic(),
                        "detail": _params_notice(params),
                        "params": params,
                    }
                )
            runner.start()

        return Outcome(result, go)

    def _finished(self, runner: Runner) -> None:
        with self._lock:
            if self._runner is runner:
                self._owner = None

    def _stop(self, client: Client, args: dict[str, Any]) -> Outcome:
        with self._lock:
            runner = self._runner
        if runner is None or not runner.active:
            if runner is not None:
                runner.wait(STOP_TIMEOUT)  # finishing on its own: let it reap its jobs
            raise RequestError("not_running", "no task set is running")
        if not runner.stop(STOP_TIMEOUT):
            raise RequestError("internal", "some job processes could not be reaped in time")
        return Outcome({"stopped": True, "tasks": runner.snapshot()["tasks"]})

    def _clear(self, client: Client, args: dict[str, Any]) -> Outcome:
        with self._lock:
            runner = self._runner
        stopped = False
        if runner is not None and runner.active:
            if not runner.stop(STOP_TIMEOUT):
                raise RequestError("internal", "some job processes could not be reaped in time")
            stopped = True
        elif runner is not None:
            runner.wait(STOP_TIMEOUT)  # finishing on its own: let it reap its jobs
        with self._lock:
            if self._runner is not None and not self._runner.finished:
                raise RequestError("busy", "a new task set was started meanwhile")
            self._binaries.clear()
            self._runner, self._owner = None, None
            self._tasks, self._params = [], []
        return Outcome({"cleared": True, "stopped": stopped})


def _params_notice(params: list[Any]) -> str:
    kinds = []
    for p in params:
        if isinstance(p, dict) and "optimize" in p:
            kinds.append("admission control (optimize)")
        elif isinstance(p, dict):
            kinds.append("{" + ", ".join(map(str, list(p)[:5])) + "}")
        else:
            kinds.append(type(p).__name__)
    return (
        f"session parameters received: {'; '.join(kinds)}; recorded "
        "(this agent does not enforce admission control)"
    )
