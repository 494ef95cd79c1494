"""The agent's requests (ops) and state, independent of sockets.

Ops, their ``args`` and results (errors are ``RequestError(code, message)``):

``ping`` {} -> ``{"ts": monotonic}``
``time`` {} -> ``{"monotonic": s, "monotonic_ns": ns, "wall": s}`` (for clock offsets)
``status`` {} -> ``{"running": bool, "tasks": [ids], "running_jobs": {id: job},
    "done": [ids], "t0": s|None, "params": [...], "binaries": [names],
    "agent_version": V, "uptime": s, "clients": n, "pid": n, "warm_up": [[event types]
    of each set :mod:`farm.agent.warmup` ran in this process], "before_identity": bool
    (the agent was set up before its key came, e.g. in the warm-start template)}``
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
``exec``, ``exec_poll``, ``exec_kill``, ``exec_forget``: one shell command at a
    synchronised instant, its whole output read back in chunks (NetJobs; see
    :mod:`farm.agent.netexec`, imported on first use).

Session parameters (``params``) are recorded, returned by ``start`` and
``status``, and acknowledged by a NOTICE event with ``task_id`` -1 (the set as
a whole) and the parameters in its ``params`` field. This agent does not
enforce admission control itself; the NOTICE says so. A set with built-in
workloads that must run as Python (no usable native ``farm-workload``, see
:mod:`farm.agent.commands`) gets one more such NOTICE saying so.

Start-up cost: in a TCG guest every import costs milliseconds before the first handshake,
so the task-set machinery (runner, jobs, ... dataclasses, subprocess, ctypes ...) is not
imported with this module. The first authenticated client starts :func:`load_machinery`,
the work directory and the held log records (:mod:`farm.agent.logs`) in a thread, which
``start`` waits for; a warm-start template does it before its save (:meth:`preload`).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time

from farm.agent import logs, protocol

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is slow to import in a TCG guest
if TYPE_CHECKING:
    import tempfile
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any, Protocol

    from farm.agent import jobs, sched
    from farm.agent.binaries import BinaryStore
    from farm.agent.guard import Group
    from farm.agent.netexec import NetExec
    from farm.agent.runner import Runner
    from farm.agent.taskspec import TaskSpec

    class Client(Protocol):
        """What the service needs of a connected, authenticated client."""

        name: str

        def send(self, message: dict[str, Any]) -> None:
            """Queue a message to the client (never blocks)."""


log = logs.get_logger(__name__)

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


class Outcome:
    """A request's result, and what to do once the reply has been queued."""

    __slots__ = ("result", "then")  # a plain class: dataclasses is slow to import

    def __init__(self, result: Any, then: Callable[[], None] | None = None) -> None:
        self.result = result
        self.then = then

    def __repr__(self) -> str:
        return f"Outcome(result={self.result!r}, then={self.then!r})"


def load_machinery() -> None:
    """Import what running a task set needs, and load ctypes/libc (see the module docstring)."""
    from farm.agent import binaries, commands, jobs, runner, taskspec  # noqa: F401

    jobs.preload()


#: how long the first ``start`` waits for the start-up work of :func:`_after_first_handshake`
PRELOAD_WAIT = 60.0


def _after_first_handshake(service: AgentService) -> None:
    """The agent's remaining start-up work (the machinery, the work directory, the held log
    records: ~0.4 s in a fresh TCG guest); ``start`` waits for it (``_preloaded``)."""
    began = time.monotonic()
    try:
        load_machinery()
        with service._lock:
            service._prepare_workdir()
    except Exception:  # start will try again and report the failure to the client
        log.exception("loading the task-set machinery failed")
    finally:
        log.info("start-up work done in %.3f s", time.monotonic() - began)
        logs.release()
        service._preloaded.set()


#: set by the guest image's /init to the agent version recorded at build time
VERSION_ENV = "FARM_AGENT_VERSION"


class AgentService:
    """Holds the agent's state (binaries, running set, params) and executes ops.

    ``workdir``: where jobs run and binaries are kept (made by the first
    ``start``); None: a private temporary directory, removed by :meth:`shutdown`.
    """

    def __init__(self, workdir: Path | None = None) -> None:
        # the guest's /init passes the digest its image build took of the very sources it
        # ships: hashing them again costs ~5 ms of TCG time before the agent listens
        self.version = os.environ.get(VERSION_ENV) or protocol.agent_version()
        self._started = time.monotonic()
        self._workdir = workdir
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._binaries: BinaryStore | None = None
        self._lock = threading.Lock()
        self._preloading = False
        self._preloaded = threading.Event()  # set once the start-up work is done
        self.before_identity = False  # set up before its key came: see farm.agent.__main__
        self._runner: Runner | None = None
        self._owner: Client | None = None
        self._tasks: list[TaskSpec] = []
        self._params: list[Any] = []
        self._clients: set[Client] = set()
        self._netexec: NetExec | None = None
        self._group: Group | None = None  # the processes of self._runner's set
        self._ops: dict[str, Callable[[Client, dict[str, Any]], Outcome]] = {
            "ping": self._ping,
            "time": self._time,
            "status": self._status,
            "start": self._start,
            "stop": self._stop,
            "clear": self._clear,
        }
        for name in ("exec", "exec_poll", "exec_kill", "exec_forget"):
            self._ops[name] = self._exec_op(name)

    @property
    def ops(self) -> frozenset[str]:
        """Names of the ops this agent understands."""
        return frozenset(self._ops)

    def attach(self, client: Client) -> None:
        """A client authenticated (the first one starts the start-up work)."""
        with self._lock:
            self._clients.add(client)
            preload = not self._preloading
            self._preloading = True
        if preload:
            threading.Thread(
                target=_after_first_handshake, args=(self,), name="preload", daemon=True
            ).start()

    def preload(self) -> None:
        """The start-up work :meth:`attach` starts, done now (a template, before its save)."""
        self._preloading = True
        _after_first_handshake(self)

    def detach(self, client: Client) -> None:
        """A client went away; stop its task set if it owned the running one."""
        with self._lock:
            self._clients.discard(client)
            runner = self._runner if self._owner is client else None
        if runner is not None and not runner.finished:
            log.warning("client %s owning the running set left: stopping the set", client.name)
            runner.stop(STOP_TIMEOUT)
        if self._netexec is not None:
            self._netexec.detach(client)

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
            netexec = self._netexec
        if netexec is not None:
            netexec.shutdown()
        try:
            if runner is not None and not runner.stop(STOP_TIMEOUT):
                log.error("jobs of the running set were not all reaped at shutdown")
        finally:
            with self._lock:
                if self._binaries is not None:
                    self._binaries.clear()
                    self._binaries = None
                if self._tmpdir is not None:
                    self._tmpdir.cleanup()
                    self._tmpdir, self._workdir = None, None

    def _prepare_workdir(self) -> tuple[BinaryStore, Path]:
        """The binary store and the jobs' directory, created on first use (hold the lock)."""
        if self._binaries is None or self._workdir is None:
            from pathlib import Path

            from farm.agent.binaries import BinaryStore

            if self._workdir is None:
                import tempfile

                self._tmpdir = tempfile.TemporaryDirectory(prefix="farm-agent-")
                self._workdir = Path(self._tmpdir.name)
            (self._workdir / "jobs").mkdir(mode=0o700, parents=True, exist_ok=True)
            self._binaries = BinaryStore(self._workdir / "bin")
        return self._binaries, self._workdir / "jobs"

    def _binary_names(self) -> frozenset[str]:
        return frozenset() if self._binaries is None else self._binaries.names()

    # -- ops -----------------------------------------------------------------

    def _ping(self, client: Client, args: dict[str, Any]) -> Outcome:
        return Outcome({"ts": time.monotonic()})

    def _time(self, client: Client, args: dict[str, Any]) -> Outcome:
        ns = time.monotonic_ns()
        return Outcome({"monotonic": ns / 1e9, "monotonic_ns": ns, "wall": time.time()})

    def _status(self, client: Client, args: dict[str, Any]) -> Outcome:
        warmup = sys.modules.get("farm.agent.warmup")  # (only a warm-start template's agent)
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
                "binaries": sorted(self._binary_names()),
                "agent_version": self.version,
                "uptime": time.monotonic() - self._started,
                "clients": len(self._clients),
                "pid": os.getpid(),
                "warm_up": [] if warmup is None else [list(e) for e in warmup.history],
                "before_identity": self.before_identity,
            }
        return Outcome(result)

    def _start(self, client: Client, args: dict[str, Any]) -> Outcome:
        from farm.agent import commands, guard
        from farm.agent.binaries import BadBinary
        from farm.agent.runner import Runner
        from farm.agent.taskspec import InvalidTaskSet, parse_taskset

        params = args.get("params", [])
        if params is None:
            params = []
        if isinstance(params, dict):
            params = [params]
        if not isinstance(params, list):
            raise RequestError("bad_request", "params must be a list of session parameters")
        if self._preloading:
            self._preloaded.wait(PRELOAD_WAIT)
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
            store, jobdir = self._prepare_workdir()
            try:
                uploads = store.decode_all(args.get("binaries"))
            except BadBinary as exc:
                raise RequestError("bad_request", str(exc)) from exc
            try:
                tasks = parse_taskset(args.get("tasks"), store.names() | set(uploads))
            except InvalidTaskSet as exc:
                raise RequestError("invalid_taskset", str(exc)) from exc
            for name, data in uploads.items():
                store.put(name, data)
            paths = {name: store.path(name) for name in store.names()}

            group = guard.Group("set", enter=True)  # ends with the set: setsid'ed children too

            def launcher(task: TaskSpec, index: int, plan: sched.SchedPlan) -> jobs.Launch:
                launch = commands.build_launch(task, index, plan, paths, jobdir)
                launch.env.update(group.env)  # a fresh dict per job
                return launch

            def finished(done: Runner) -> None:
                group.close()
                self._finished(done)

            def emit(event: dict[str, Any]) -> None:
                client.send({"type": "event", "event": event})

            fallback = commands.fallback_notice(t.pkg for t in tasks if t.pkg not in paths)

            runner = Runner(tasks, launcher, emit, finished, t0=at)
            self._runner, self._owner, self._group = runner, client, group
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
            if fallback:
                emit(
                    {
                        "task_id": SET_TASK_ID,
                        "job": None,
                        "type": "NOTICE",
                        "ts": time.monotonic(),
                        "detail": fallback,
                    }
                )
            runner.start()

        return Outcome(result, go)

    def _exec_op(self, op: str) -> Callable[[Client, dict[str, Any]], Outcome]:
        def handler(client: Client, args: dict[str, Any]) -> Outcome:
            return self._exec(client, args, op)

        return handler

    def _exec(self, client: Client, args: dict[str, Any], op: str) -> Outcome:
        from farm.agent.netexec import ExecError, NetExec

        with self._lock:
            if self._netexec is None:
                self._netexec = NetExec()
            netexec = self._netexec
        action = {
            "exec": netexec.exec,
            "exec_poll": netexec.poll,
            "exec_kill": netexec.kill,
            "exec_forget": netexec.forget,
        }[op]
        try:
            return Outcome(action(client, args))
        except ExecError as exc:
            raise RequestError(exc.code, exc.message) from exc

    def _finished(self, runner: Runner) -> None:
        with self._lock:
            if self._runner is runner:
                self._owner = None

    def _stop(self, client: Client, args: dict[str, Any]) -> Outcome:
        with self._lock:
            runner, group = self._runner, self._group
        if runner is None or not runner.active:
            if runner is not None:
                runner.wait(STOP_TIMEOUT)  # finishing on its own: let it reap its jobs
            raise RequestError("not_running", "no task set is running")
        if not runner.stop(STOP_TIMEOUT):
            raise RequestError("internal", "some job processes could not be reaped in time")
        if group is not None:  # its on_finish may not have run yet: nothing survives a stop
            group.close()
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
            if self._binaries is not None:
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
