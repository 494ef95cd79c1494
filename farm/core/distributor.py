"""Distributor: keeps up to N slots (guests) alive and feeds them the variants of submissions.

Python-shell workflow of seed 004 plus taskgen's API::

    dist = Distributor()
    dist.add_job(Hey0TaskSet(), LoggingMonitor())   # returns at once
    dist.set_max_machine_value(3)                    # 1..cap, any time
    dist.get_distributor_state()                     # True while work or machines are active
    dist.close()

Submissions are FIFO; each one's variants are generated lazily. Progress is
journaled, so adding the same task set to a new Distributor after a crash
(or calling ``resume()``) runs only the variants not yet finished. Slots
reach the Distributor only through its :class:`SlotPort` methods
(``acquire``, ``finished``, ``failed``, ``gave_up``, ``exited``, ``wake``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import subprocess
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from farm.backend import Backend
from farm.backend import create as create_backend
from farm.config import FarmConfig
from farm.control.server import ControlServer
from farm.core.journal import Journal
from farm.core.logfile import attach_log_file, log_file_for
from farm.core.pool import SlotPool
from farm.core.ports import MonitorPort, SlotEnvironment
from farm.core.records import TaskSource
from farm.core.slot import Slot
from farm.core.submission import Submission, submission_key
from farm.errors import ConfigError
from farm.reaper import start_reaper
from farm.session import AbstractSession
from farm.session.genode_select import session_class_for, session_factory
from farm.session.token import resolve_token, secure_dirs

log = logging.getLogger(__name__)


class Distributor:
    """Runs submissions (task set + monitor) on a self-managed pool of guests."""

    def __init__(
        self,
        where: FarmConfig | str | Path | Sequence[str] | None = None,
        /,
        config: FarmConfig | str | Path | None = None,
        *,
        backend: Backend | str | None = None,
        session_class: type[AbstractSession] | None = None,
        **overrides: Any,
    ) -> None:
        """``where``: a config (FarmConfig, path of a .toml) or existing targets.

        Existing targets (taskgen's ``Distributor(["172.25.1.0/24", "10.0.0.7"])``)
        are a list/tuple/set of target strings, or one string that neither ends in
        ``.toml`` nor names an existing file (it may hold several targets separated by
        commas or spaces); the config then comes from ``config=`` (or farm.toml). They
        use the ``hosts`` backend (config ``rescan_interval``: seconds between probes
        of unleased hosts). Unless ``max_machines`` is given (keyword, or a
        config value other than the default 1), the machine limit starts at
        min(number of hosts, machine_cap).

        Every resource (backend, reaper process, journal, control socket) is opened
        here through one ExitStack: if any step fails, what was opened is closed.
        """
        targets = _as_targets(where)
        if where is not None and targets is None:
            if config is not None:
                raise ConfigError("config given twice (positional and config=)")
            config = where  # type: ignore[assignment]
        if isinstance(backend, str):  # Distributor(backend="qemu") is a config override
            overrides["backend"] = backend
            backend = None
        if targets is not None and (backend is not None or overrides.get("backend")):
            raise ConfigError("existing targets use the hosts backend; leave backend unset")
        if isinstance(config, FarmConfig):
            self.config = config.replace(**overrides) if overrides else config
        else:
            self.config = FarmConfig.load(config, **overrides)
        cfg = self.config
        log_path = log_file_for(cfg.log_file, cfg.log_dir)
        if log_path is not None:
            attach_log_file(log_path)
        secure_dirs(cfg.state_dir, cfg.log_dir)  # 0700, files 0600: whatever the token's source
        self.token = resolve_token(cfg.token, cfg.state_dir)
        session_cls = session_class_for(cfg, session_class)  # config/profile `session`
        self._closed = False
        self._closer: threading.Thread | None = None
        self.event_handler: object = None  # taskgen compatibility: default monitor for start()
        with contextlib.ExitStack() as stack:
            if backend is None:
                backend = create_backend(cfg, targets, session_cls)
            stack.callback(backend.close)
            backend.check()
            reaped = backend.reap_stale()
            if reaped:
                log.warning("reaped guests left by a dead farm: %s", ", ".join(reaped))
            reaper = start_reaper(cfg.state_dir)
            stack.callback(_stop_process, reaper)
            self._journal: Journal | None = None
            if cfg.journal:
                self._journal = Journal(cfg.state_dir / "journal.db")
                stack.callback(self._journal.close)
            self._backend = backend
            env = SlotEnvironment(
                config=cfg,
                backend=backend,
                sessions=session_factory(session_cls, cfg, self.token),
                boot_slots=threading.BoundedSemaphore(cfg.max_concurrent_boots),
                token=self.token,
            )
            limit = cfg.max_machines
            if targets is not None and "max_machines" not in overrides and cfg.max_machines == 1:
                limit = max(1, min(backend.size or 1, cfg.machine_cap))
            self._pool = SlotPool(env, limit)
            self._control = _start_control(self)  # farm status: <state_dir>/control.sock
            if self._control is not None:
                stack.callback(self._control.close)
            backend.on_capacity_changed = self._pool.capacity_changed  # a hypervisor came back
            self._resources = stack.pop_all()
        _live.add(self)
        log.info(
            "distributor up: backend=%s network=%s limit=%d state=%s",
            self._backend.kind if targets is not None else cfg.backend,
            cfg.network,
            limit,
            cfg.state_dir,
        )

    # -- submissions ---------------------------------------------------------------
    def add_job(
        self,
        taskset: TaskSource,
        monitor: object = None,
        *session_parameters: object,
        name: str | None = None,
    ) -> Submission:
        """Queue a task set (all its variants) for ``monitor``; returns at once."""
        self._check_open()
        validate = getattr(taskset, "validate", None)
        if validate is not None:
            validate()
        if not hasattr(taskset, "variants"):
            raise ConfigError(f"{taskset!r} is not a task set (it has no variants())")
        key = submission_key(taskset, name)
        with self._pool.cond:  # wrapper and submission together: no release can close it in between
            mon = self._pool.monitor_for(monitor if monitor is not None else self.event_handler)
            if any(j.key == key and not j.done for j in self._pool.submissions):
                key = f"{key}#{sum(1 for j in self._pool.submissions if j.key.startswith(key)) + 1}"
            job = Submission(
                taskset,
                mon,
                session_parameters,
                key=key,
                set_tries=self.config.set_tries,
                journal=self._journal,
            )
            self._pool.submissions.append(job)
            self._pool.paused = False
            self._pool.gave_up_slots.clear()
            log.info(
                "job %d added: %s (%s variants%s)",
                job.number,
                key,
                job.total if job.total is not None else "?",
                f", {job.skipped} already finished" if job.skipped else "",
            )
            self._pool.rebalance()
            self._pool.cond.notify_all()
        return job

    def resume(self, monitor: object = None) -> list[Submission]:
        """Re-add the unfinished submissions of the journal whose task set could be stored.

        The journal keeps task sets, not monitors: pass the monitor the jobs reported
        to (ConfigError without one, unless ``event_handler`` is set), or it would
        never hear the resumed variants end and keep them ``started``.
        """
        if self._journal is None:
            return []
        entries = self._journal.unfinished()
        if entries and monitor is None and self.event_handler is None:
            raise ConfigError(
                f"resume() needs a monitor: {len(entries)} unfinished job(s) in the journal "
                "reported to one it does not store; pass it again, e.g. "
                "resume(SqliteMonitor('results.db'))"
            )
        jobs = []
        for entry in entries:
            if entry["taskset"] is None:
                log.warning(
                    "job %s cannot be resumed automatically (task set not picklable); "
                    "add the same task set again to resume it",
                    entry["key"],
                )
                continue
            if any(j.key == entry["key"] for j in self._pool.submissions):
                continue
            jobs.append(self.add_job(entry["taskset"], monitor, name=entry["key"]))
        return jobs

    # -- limits and state --------------------------------------------------------
    def set_max_machine_value(self, n: int) -> None:
        """Set how many machines may run (1..machine_cap); takes effect at once."""
        cap = self.config.machine_cap
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= cap:
            raise ConfigError(f"max machine value must be an integer in 1..{cap}, got {n!r}")
        with self._pool.cond:
            self._pool.limit = n
            self._pool.paused = False
            self._pool.gave_up_slots.clear()
            log.info("machine limit set to %d", n)
            self._pool.rebalance()
            self._pool.cond.notify_all()

    def get_max_machine_value(self) -> int:
        return self._pool.limit

    def get_distributor_state(self) -> bool:
        """True while any submission has work left or any machine is alive."""
        with self._pool.cond:
            return any(not j.done for j in self._pool.submissions) or bool(self._pool.slots)

    def machines(self) -> list[dict[str, object]]:
        with self._pool.cond:
            return [m.info() for m in self._pool.slots.values()]

    def jobs(self) -> list[dict[str, object]]:
        with self._pool.cond:
            return [j.summary() for j in self._pool.submissions]

    def backend_kind(self) -> str:
        """The backend's kind ("qemu", "hosts", ...), for status displays."""
        return self._backend.kind

    def backend_status(self) -> list[dict[str, Any]]:
        """The backend's per-host status (``farm status``); [] for single-host backends."""
        return self._backend.status()

    def stalled(self) -> bool:
        """True when every slot gave up booting and no machine is left: no progress possible."""
        with self._pool.cond:
            return self._pool.stalled()

    # -- stopping ---------------------------------------------------------------
    def kill_all_machines(self) -> None:
        """Destroy every guest now; running sets are re-queued and reported stopped.

        The distributor then pauses: submissions stay queued until the next add_job()
        or set_max_machine_value().
        """
        with self._pool.cond:
            self._pool.paused = True
            machines = list(self._pool.slots.values())
        for m in machines:
            m.kill()
        self._join(machines)

    def shut_down_all_machines(self, wait: bool = True) -> None:
        """Let every machine finish its current set, then shut it down (pauses, like kill)."""
        with self._pool.cond:
            self._pool.paused = True
            machines = list(self._pool.slots.values())
            for m in machines:
                m.retire()
            self._pool.cond.notify_all()
        if wait:
            self._join(machines)

    def start(self, taskset: TaskSource, *session_params: object, wait: bool = True) -> Submission:
        """taskgen API: run a task set with ``event_handler`` as monitor."""
        job = self.add_job(taskset, self.event_handler, *session_params)
        if wait:
            self.wait_finished()
        return job

    def stop(self, wait: bool = True) -> None:
        """Stop processing: running sets are stopped on their targets and reported stopped
        (the journal keeps them unfinished), queued work is cancelled; machines stay up.

        Each slot stops its own set: after the agent's EXIT_EXTERNAL events no
        JOBS_DONE follows, so the slot must not wait for the set to finish.
        """
        with self._pool.cond:
            for job in self._pool.submissions:
                job.cancel()
            for m in self._pool.slots.values():
                m.stop_set()  # a slot between sets clears it when handed its next one
            self._pool.cond.notify_all()
        if wait:
            self.wait_finished()

    def close(self, wait: bool = True) -> None:
        """Stop everything and release all resources; idempotent."""
        if self._closed:
            return
        self._closed = True
        log.info("closing distributor")
        with self._pool.cond:
            for job in self._pool.submissions:
                job.cancel()
            self._pool.paused = True
            self._pool.closed = True
            machines = list(self._pool.slots.values())
        for m in machines:
            m.kill()
        self._closer = threading.Thread(
            target=self._finish_close, args=(machines,), name="farm-close"
        )
        self._closer.start()
        if wait:
            self.wait_closed()

    def _finish_close(self, machines: list[Slot]) -> None:
        self._join(machines)
        for mon in list(self._pool.monitors.values()):
            mon.close()
        self._resources.close()  # control socket, journal, reaper, backend (reverse order)
        _live.discard(self)
        log.info("distributor closed")

    def wait_closed(self, timeout: float | None = None) -> bool:
        closer = self._closer
        if closer is None:
            return False
        closer.join(timeout)
        return not closer.is_alive()

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Block until every submission is done (or timeout); monitors are flushed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._pool.cond:
            while any(not j.done for j in self._pool.submissions):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._pool.stalled():
                    log.error(
                        "no machine can boot; jobs cannot progress: %s", self._pool.gave_up_slots
                    )
                    return False
                self._pool.cond.wait(remaining if remaining is not None else 1.0)
            # a done submission's monitor may already be released (closing on its own
            # thread, hooks still queued): flush those too, not only the ones in use
            monitors: dict[int, MonitorPort] = {id(m): m for m in self._pool.monitors.values()}
            monitors.update((id(j.monitor), j.monitor) for j in self._pool.submissions)
        for mon in monitors.values():
            mon.flush()
        return True

    def __enter__(self) -> Distributor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internal ------------------------------------------------------------------
    def _join(self, machines: list[Slot]) -> None:
        for m in machines:
            if m is not threading.current_thread():
                m.join()

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("distributor is closed")


def _as_targets(value: object) -> str | list[str] | None:
    """Existing targets (list/tuple/set, or a str that is no .toml and no existing file)."""
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    if isinstance(value, str):
        if value.strip().lower().endswith(".toml") or Path(value).is_file():
            return None
        return value
    return None


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate and reap a helper process (the reaper)."""
    process.terminate()
    process.wait()


def _start_control(dist: Distributor) -> ControlServer | None:
    """Open the control socket; a farm without one still runs (logged)."""
    server = ControlServer(dist)
    try:
        return server if server.start() else None
    except OSError as exc:
        log.warning("no control socket (farm status will not see this farm): %s", exc)
        return None


_live: weakref.WeakSet[Distributor] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Interpreter exit (incl. Ctrl-C out of a shell): leave no guest behind."""
    for dist in list(_live):
        try:
            dist.close()
        except Exception:
            log.exception("closing distributor at exit")
