"""Shell commands started at a synchronised instant, output kept whole (NetJobs, seed 003).

Ops (registered by :mod:`farm.agent.service`):

``exec`` ``{"command": str, "at": agent monotonic s (optional), "timeout": s | None}``
    -> ``{"id": str, "at": s, "late": bool}``. A thread waits until ``at`` (sleeps,
    then spins the last millisecond), records the start instant and runs
    ``/bin/sh -c command`` in its own process group, in the agent's working
    directory, stdout and stderr into one spool file (no size cut). After
    ``timeout`` s the group is killed (state ``timeout``).
``exec_poll`` ``{"id", "offset": bytes already read, "wait": s <= MAX_WAIT}``
    -> ``{"state": "waiting"|"running"|"exited"|"timeout"|"killed"|"failed",
    "exit_code", "started": monotonic, "started_wall", "ended", "detail",
    "data": base64 of output from ``offset`` (at most ``CHUNK`` bytes),
    "next_offset", "size", "eof"}``. Waits up to ``wait`` s for news.
``exec_kill`` ``{"id"}`` -> ``{"killed": bool, "state"}``: kill the command's
    group (or cancel it before its start).

Each run is a :class:`farm.agent.guard.Group`: what its shell starts, even
detached with setsid, is killed when the run ends (exit, timeout or kill).

Runs belong to the client that started them: when it leaves, they are killed
and forgotten. Errors: ``bad_request``, ``not_found``.
"""

from __future__ import annotations

import base64
import math
import os
import threading
import time

from farm.agent import guard, logs

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is slow to import in a TCG guest
if TYPE_CHECKING:
    import subprocess
    from typing import Any, BinaryIO

log = logs.get_logger(__name__)

CHUNK = 1 << 20  # output bytes per poll reply (base64: ~1.4 MB, far below MAX_FRAME)
MAX_WAIT = 5.0
MAX_DELAY = 86400.0
MAX_RUNS = 256
SPIN = 0.001
TERMINAL = frozenset({"exited", "timeout", "killed", "failed"})


class ExecError(Exception):
    """A request the service answers with an error reply (code, message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _number(args: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ExecError("bad_request", f"{key} must be a number")
    if not low <= value <= high:
        raise ExecError("bad_request", f"{key} must be within [{low}, {high}]")
    return float(value)


def wait_until(at: float, cancel: threading.Event) -> None:
    """Sleep until monotonic ``at`` (spinning the last millisecond), or until cancelled."""
    while not cancel.is_set():
        remaining = at - time.monotonic()
        if remaining <= 0:
            return
        if remaining > SPIN:
            cancel.wait(remaining - SPIN)


class _Run:
    """One command: waits for its instant, runs, records how it ended."""

    def __init__(self, rid: str, owner: object, command: str, at: float, timeout: float | None):
        import tempfile

        self.id = rid
        self.owner = owner
        self.command = command
        self.at = at
        self.timeout = timeout
        self.spool: BinaryIO = tempfile.TemporaryFile(prefix="farm-netexec-")  # noqa: SIM115 - closed by close()
        self.cond = threading.Condition()
        self.state = "waiting"
        self.exit_code: int | None = None
        self.started: float | None = None
        self.started_wall: float | None = None
        self.ended: float | None = None
        self.detail: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.kill_requested = False
        self.group = guard.Group(f"exec-{rid}")
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"netexec-{rid}", daemon=True)

    def _set(self, **changes: Any) -> None:
        with self.cond:
            for key, value in changes.items():
                setattr(self, key, value)
            self.cond.notify_all()

    def _main(self) -> None:
        import subprocess

        wait_until(self.at, self.cancel)
        with self.cond:
            if self.kill_requested:
                self.state, self.detail = "killed", "killed before its start"
                self.cond.notify_all()
                self.group.close()
                return
            env = {k: v for k, v in os.environ.items() if k != "FARM_TOKEN"}
            env.update(self.group.env)
            marker = guard.entry()  # the agent-wide marker: the guard kills it with the agent
            if marker is not None:
                env[marker[0]] = marker[1]
            self.started, self.started_wall = time.monotonic(), time.time()
            try:
                procs = self.group.procs  # the shell joins the run's cgroup before all else
                argv = ["/bin/sh", "-c", self.command]
                if procs is not None:
                    argv = ["/bin/sh", "-c", guard.ENTER, "sh", procs, self.command]
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=self.spool,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                self.state, self.detail = "failed", f"cannot run /bin/sh: {exc}"
                self.ended = time.monotonic()
                self.cond.notify_all()
                self.group.close()
                return
            self.state = "running"
            self.cond.notify_all()
        proc = self.proc
        try:
            code = proc.wait(self.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            self._kill_group()
            code = proc.wait()
        ended = time.monotonic()
        self.group.close()  # what it started in the background ends with it (setsid too)
        with self.cond:
            if timed_out:
                self.state, self.detail = "timeout", f"timed out after {self.timeout} s"
            elif self.kill_requested:
                self.state, self.detail = "killed", "killed on request"
            else:
                self.state = "exited"
            self.exit_code, self.ended = code, ended
            self.cond.notify_all()

    def _kill_group(self) -> None:
        import signal

        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass  # already gone

    def kill(self) -> bool:
        """Kill the command (or cancel its start); False if it had already ended."""
        with self.cond:
            if self.state in TERMINAL:
                return False
            self.kill_requested = True
            self.cancel.set()
            running = self.state == "running"
        if running:
            self._kill_group()
        return True

    def size(self) -> int:
        return os.fstat(self.spool.fileno()).st_size

    def poll(self, offset: int, wait: float) -> dict[str, Any]:
        deadline = time.monotonic() + wait
        with self.cond:
            while self.state not in TERMINAL and self.size() <= offset:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(min(remaining, 0.05))  # output arrives without notification
            state = self.state
            snapshot = {
                "state": state,
                "exit_code": self.exit_code,
                "started": self.started,
                "started_wall": self.started_wall,
                "ended": self.ended,
                "detail": self.detail,
            }
        size = self.size()
        data = os.pread(self.spool.fileno(), min(CHUNK, max(0, size - offset)), offset)
        next_offset = offset + len(data)
        snapshot.update(
            data=base64.b64encode(data).decode("ascii"),
            next_offset=next_offset,
            size=size,
            eof=state in TERMINAL and next_offset >= size,
        )
        return snapshot

    def close(self) -> None:
        self.kill()
        self.thread.join(10.0)
        self.group.close()
        self.spool.close()


class NetExec:
    """The runs of all clients, by id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._count = 0

    def exec(self, owner: object, args: dict[str, Any]) -> dict[str, Any]:
        """Validate and schedule one command; reply with its id and start instant."""
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ExecError("bad_request", "command must be a non-empty string")
        if "\0" in command:  # else Popen fails in the run thread: a poll waits
            raise ExecError("bad_request", "command must not contain a NUL character")
        now = time.monotonic()
        at = _number(args, "at", now - 60, now + MAX_DELAY)
        timeout = _number(args, "timeout", 0.0, 10 * MAX_DELAY)
        with self._lock:
            if len(self._runs) >= MAX_RUNS:
                raise ExecError("busy", f"{MAX_RUNS} commands kept; kill or finish some first")
            self._count += 1
            rid = f"x{self._count}"
            run = _Run(rid, owner, command, now if at is None else at, timeout)
            self._runs[rid] = run
        run.thread.start()
        log.info("exec %s at %.6f (in %.3f s): %s", rid, run.at, run.at - now, command[:200])
        return {"id": rid, "at": run.at, "late": run.at < now}

    def _get(self, owner: object, args: dict[str, Any]) -> _Run:
        rid = args.get("id")
        with self._lock:
            run = self._runs.get(rid) if isinstance(rid, str) else None
        if run is None or run.owner is not owner:
            raise ExecError("not_found", f"no command {rid!r} of this client")
        return run

    def poll(self, owner: object, args: dict[str, Any]) -> dict[str, Any]:
        """State and the next chunk of output of one command."""
        run = self._get(owner, args)
        offset = args.get("offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ExecError("bad_request", "offset must be a non-negative integer")
        wait = _number(args, "wait", 0.0, MAX_WAIT) or 0.0
        return run.poll(offset, wait)

    def kill(self, owner: object, args: dict[str, Any]) -> dict[str, Any]:
        """Kill one command's process group."""
        run = self._get(owner, args)
        killed = run.kill()
        return {"killed": killed, "state": run.state}

    def forget(self, owner: object, args: dict[str, Any]) -> dict[str, Any]:
        """Drop a finished command and its spooled output."""
        run = self._get(owner, args)
        with self._lock:
            self._runs.pop(run.id, None)
        run.close()
        return {"forgotten": True}

    def detach(self, owner: object) -> None:
        """Kill and forget every command of a client that left."""
        with self._lock:
            mine = [r for r in self._runs.values() if r.owner is owner]
            for run in mine:
                del self._runs[run.id]
        for run in mine:
            if run.kill():
                log.warning("client left: killed command %s", run.id)
            run.close()

    def shutdown(self) -> None:
        """Kill and forget every command."""
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
        for run in runs:
            run.close()
