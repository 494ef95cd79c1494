"""Distributor: keeps up to N machines alive and feeds them the variants of queued jobs.

Python-shell workflow of seed 004 plus taskgen's API::

    dist = Distributor()
    dist.add_job(Hey0TaskSet(), LoggingMonitor())   # returns at once
    dist.set_max_machine_value(3)                    # 1..cap, any time
    dist.get_distributor_state()                     # True while jobs or machines are active
    dist.close()

Jobs are FIFO; each job's variants are generated lazily. Progress is
journaled, so adding the same task set to a new Distributor after a crash
(or calling ``resume()``) runs only the variants not yet finished.
"""

from __future__ import annotations

import atexit
import logging
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
from farm.errors import ConfigError
from farm.job import Job, job_key
from farm.journal import Journal
from farm.machine import Machine
from farm.monitors import MonitorThread
from farm.reaper import start_reaper
from farm.session import FarmSession
from farm.session.token import resolve_token

log = logging.getLogger(__name__)

#: finished jobs kept for jobs()/status; older ones are dropped so a farm fed jobs for
#: days does not keep every job's task set and counters (soak: ~6 KiB per job)
KEEP_DONE_JOBS = 100


class Distributor:
    """Runs jobs (task set + monitor) on a self-managed pool of guests."""

    def __init__(
        self,
        where: FarmConfig | str | Path | Sequence[str] | None = None,
        /,
        config: FarmConfig | str | Path | None = None,
        *,
        backend: Backend | str | None = None,
        session_class: type | None = None,
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
        """
        targets = _as_targets(where)
        if where is not None and targets is None:
            if config is not None:
                raise ConfigError("config given twice (positional and config=)")
            else:
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
        _setup_log_file(cfg.log_dir / "distributor.log")
        self.token = resolve_token(cfg.token, cfg.state_dir)
        self._session_class = session_class or FarmSession
        if backend is None:
            backend = create_backend(cfg, targets, self._session_class)
        self._backend = backend
        if hasattr(backend, "capacity_changed"):  # multi-host: a host came back
            backend.capacity_changed = self._capacity_changed
        self._backend.check()
        reaped = self._backend.reap_stale()
        if reaped:
            log.warning("reaped guests left by a dead farm: %s", ", ".join(reaped))
        self._reaper = start_reaper(cfg.state_dir)
        self._journal = Journal(cfg.state_dir / "journal.db") if cfg.journal else None
        self._cond = threading.Condition()
        self._jobs: list[Job] = []
        self._machines: dict[str, Machine] = {}
        self._monitors: dict[int, MonitorThread] = {}
        self._limit = cfg.max_machines
        if targets is not None and "max_machines" not in overrides and cfg.max_machines == 1:
            self._limit = max(1, min(getattr(self._backend, "size", 1), cfg.machine_cap))
        self._paused = False
        self._closed = False
        self._boot_slots = threading.BoundedSemaphore(cfg.max_concurrent_boots)
        self._gave_up: dict[str, str] = {}
        self.event_handler: Any = None  # taskgen compatibility: default monitor for start()
        _live.add(self)
        self._control = _start_control(self)  # farm status: <state_dir>/control.sock
        log.info(
            "distributor up: backend=%s network=%s limit=%d state=%s",
            self._backend.kind if targets is not None else cfg.backend,
            cfg.network,
            self._limit,
            cfg.state_dir,
        )

    # -- jobs ------------------------------------------------------------------
    def add_job(
        self, taskset: Any, monitor: Any = None, *session_parameters: Any, name: str | None = None
    ) -> Job:
        """Queue a task set (all its variants) for ``monitor``; returns at once."""
        self._check_open()
        validate = getattr(taskset, "validate", None)
        if validate is not None:
            validate()
        if not hasattr(taskset, "variants"):
            raise ConfigError(f"{taskset!r} is not a task set (it has no variants())")
        key = job_key(taskset, name)
        with self._cond:  # wrapper and job together: no release can close it in between
            mon = self._monitor_thread(monitor if monitor is not None else self.event_handler)
            if any(j.key == key and not j.done for j in self._jobs):
                key = f"{key}#{sum(1 for j in self._jobs if j.key.startswith(key)) + 1}"
            job = Job(
                taskset,
                mon,
                session_parameters,
                key=key,
                set_tries=self.config.set_tries,
                journal=self._journal,
            )
            self._jobs.append(job)
            self._paused = False
            self._gave_up.clear()
            log.info(
                "job %d added: %s (%s variants%s)",
                job.number,
                key,
                job.total if job.total is not None else "?",
                f", {job.skipped} already finished" if job.skipped else "",
            )
            self._rebalance()
            self._cond.notify_all()
        return job

    def resume(self, monitor: Any = None) -> list[Job]:
        """Re-add the unfinished jobs of the journal whose task set could be stored."""
        if self._journal is None:
            return []
        jobs = []
        for entry in self._journal.unfinished():
            if entry["taskset"] is None:
                log.warning(
                    "job %s cannot be resumed automatically (task set not picklable); "
                    "add the same task set again to resume it",
                    entry["key"],
                )
                continue
            if any(j.key == entry["key"] for j in self._jobs):
                continue
            jobs.append(self.add_job(entry["taskset"], monitor, name=entry["key"]))
        return jobs

    # -- limits and state --------------------------------------------------------
    def set_max_machine_value(self, n: int) -> None:
        """Set how many machines may run (1..machine_cap); takes effect at once."""
        cap = self.config.machine_cap
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= cap:
            raise ConfigError(f"max machine value must be an integer in 1..{cap}, got {n!r}")
        with self._cond:
            self._limit = n
            self._paused = False
            self._gave_up.clear()
            log.info("machine limit set to %d", n)
            self._rebalance()
            self._cond.notify_all()

    def get_max_machine_value(self) -> int:
        return self._limit

    def get_distributor_state(self) -> bool:
        """True while any job has work left or any machine is alive."""
        with self._cond:
            return any(not j.done for j in self._jobs) or bool(self._machines)

    def machines(self) -> list[dict[str, Any]]:
        with self._cond:
            return [m.info() for m in self._machines.values()]

    def jobs(self) -> list[dict[str, Any]]:
        with self._cond:
            return [j.summary() for j in self._jobs]

    # -- stopping ---------------------------------------------------------------
    def kill_all_machines(self) -> None:
        """Destroy every guest now; running sets are re-queued and reported stopped.

        The distributor then pauses: jobs stay queued until the next add_job()
        or set_max_machine_value().
        """
        with self._cond:
            self._paused = True
            machines = list(self._machines.values())
        for m in machines:
            m.kill()
        self._join(machines)

    def shut_down_all_machines(self, wait: bool = True) -> None:
        """Let every machine finish its current set, then shut it down (pauses, like kill)."""
        with self._cond:
            self._paused = True
            machines = list(self._machines.values())
            for m in machines:
                m.retire()
            self._cond.notify_all()
        if wait:
            self._join(machines)

    def start(self, taskset: Any, *session_params: Any, wait: bool = True) -> Job:
        """taskgen API: run a task set with ``event_handler`` as monitor."""
        job = self.add_job(taskset, self.event_handler, *session_params)
        if wait:
            self.wait_finished()
        return job

    def stop(self, wait: bool = True) -> None:
        """Stop processing: running sets are stopped on their targets and re-queued as
        unfinished (journal keeps them), queued jobs are cancelled; machines stay up."""
        with self._cond:
            for job in self._jobs:
                job.cancel()
            machines = list(self._machines.values())
            self._cond.notify_all()
        for m in machines:
            session = m.session
            if session is not None and m.current is not None:
                try:
                    session.stop()
                except Exception as exc:
                    log.warning("%s: stop failed: %s", m.machine_name, exc)
        if wait:
            self.wait_finished()

    def close(self, wait: bool = True) -> None:
        """Stop everything and release all resources; idempotent."""
        if self._closed:
            return
        self._closed = True
        log.info("closing distributor")
        with self._cond:
            for job in self._jobs:
                job.cancel()
            self._paused = True
            machines = list(self._machines.values())
        for m in machines:
            m.kill()
        self._closer = threading.Thread(
            target=self._finish_close, args=(machines,), name="farm-close"
        )
        self._closer.start()
        if wait:
            self.wait_closed()

    def _finish_close(self, machines: list[Machine]) -> None:
        self._join(machines)
        control = getattr(self, "_control", None)
        if control is not None:
            control.close()
        for mon in list(self._monitors.values()):
            mon.close()
        self._backend.close()
        self._reaper.terminate()
        self._reaper.wait()
        if self._journal is not None:
            self._journal.close()
        _live.discard(self)
        log.info("distributor closed")

    def wait_closed(self, timeout: float | None = None) -> bool:
        closer = getattr(self, "_closer", None)
        if closer is None:
            return False
        closer.join(timeout)
        return not closer.is_alive()

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Block until every job is done (or timeout); monitors are flushed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while any(not j.done for j in self._jobs):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._stalled():
                    log.error("no machine can boot; jobs cannot progress: %s", self._gave_up)
                    return False
                self._cond.wait(remaining if remaining is not None else 1.0)
        for mon in list(self._monitors.values()):
            mon.flush()
        return True

    def __enter__(self) -> Distributor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internal: called by machines ---------------------------------------------
    def _acquire(self, machine: Machine) -> tuple[Job, Any] | None:
        """Next (job, variant) for ``machine``; None when it should shut down."""
        linger = self.config.idle_linger
        deadline = time.monotonic() + linger
        with self._cond:
            while True:
                if machine.retiring or self._paused:
                    return None
                for job in self._jobs:
                    variant = job.take()
                    if variant is not None:
                        return job, variant
                    if job.done:
                        continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not any(j.has_work() for j in self._jobs):
                    return None
                self._cond.wait(max(remaining, 0.05) if remaining > 0 else 0.5)

    def _set_finished(self, machine: Machine, job: Job, variant: Any) -> None:
        """Report the set finished; settle it once the monitor has seen all its events.

        The settling runs on the monitor's thread after its hooks (results reach
        the store before the journal says finished), so the machine goes on to its
        next set at once instead of waiting for a slow monitor to drain. The journal
        says 'finishing' before the monitor is told: a farm that dies before the
        settle re-runs the set on resume and tells the monitor to replace its record.
        """
        job.finishing(variant)
        job.monitor.__taskset_finish__(variant)

        def settle() -> None:
            with self._cond:
                job.complete(variant)
                released = self._release_monitors()
                self._cond.notify_all()
            for mon in released:
                mon.close()  # on its own thread (this one) close() only queues the stop

        job.monitor.then(settle)

    def _set_failed(self, machine: Machine, job: Job, variant: Any, count_try: bool) -> None:
        job.monitor.__taskset_stop__(variant)
        with self._cond:
            requeued = job.fail(variant, count_try=count_try)
            tries = job.tries(variant) if requeued else self.config.set_tries
            self._rebalance()
            self._cond.notify_all()
        if not requeued:
            log.error("set %s #%s given up after %d tries", job.key, variant.index, tries)
            job.monitor.__taskset_bad__(variant, tries)
        with self._cond:
            released = self._release_monitors()
        for mon in released:
            mon.close()

    def _capacity_changed(self) -> None:
        """The backend can take more guests again (a hypervisor is back): fill the room."""
        with self._cond:
            self._rebalance()
            self._cond.notify_all()

    def _machine_exited(self, machine: Machine) -> None:
        with self._cond:
            self._machines.pop(machine.machine_name, None)
            log.info("%s shut down", machine.machine_name)
            self._rebalance()
            self._cond.notify_all()

    def _boot_gave_up(self, machine: Machine, exc: BaseException) -> None:
        with self._cond:
            self._gave_up[machine.machine_name] = str(exc)
            self._cond.notify_all()

    def _wake(self) -> None:
        """Wake machines waiting for work (they re-check retire/pause)."""
        with self._cond:
            self._cond.notify_all()

    def stalled(self) -> bool:
        """True when every slot gave up booting and no machine is left: jobs cannot progress."""
        with self._cond:
            return self._stalled()

    def _stalled(self) -> bool:
        return bool(self._gave_up) and not self._machines

    def _new_session(self, host: str, port: int) -> Any:
        cls: Any = self._session_class
        if not issubclass(cls, FarmSession):
            return cls(host, port)
        return cls(
            host,
            port,
            token=self.token,
            heartbeat_timeout=self.config.heartbeat_timeout,
            connect_attempts=100_000,
            retry_wait=0.02,
            retry_wait_max=0.05,  # a booting guest: notice its agent within 50 ms
        )

    # -- internal: scaling (call with _cond held) -----------------------------------
    def _rebalance(self) -> None:
        if self._closed:
            return
        active = [m for m in self._machines.values() if not m.retiring]
        surplus = len(active) - self._limit
        if surplus > 0:
            # retire idle machines first, then the highest-numbered ones
            active.sort(key=lambda m: (m.current is not None, -_slot(m.machine_name)))
            for m in active[:surplus]:
                log.info(
                    "%s will shut down after its current set (limit %d)",
                    m.machine_name,
                    self._limit,
                )
                m.retire()
            self._cond.notify_all()
            return
        if self._paused or self._gave_up or not any(j.has_work() for j in self._jobs):
            return
        # a multi-host backend may take fewer guests than the limit while hosts are down:
        # extra slots would only fail to boot, back off and give up
        room = min(self._limit, getattr(self._backend, "capacity", self._limit))
        for _ in range(room - len(active)):
            name = self._free_name()
            machine = Machine(self, name)
            self._machines[name] = machine
            machine.start()

    def _free_name(self) -> str:
        n = 1
        while f"qemu{n}" in self._machines:
            n += 1
        return f"qemu{n}"

    def _join(self, machines: list[Machine]) -> None:
        for m in machines:
            if m is not threading.current_thread():
                m.join()

    def _release_monitors(self) -> list[MonitorThread]:
        """Forget old finished jobs; drop the monitor threads no unfinished job uses.

        Call with ``_cond`` held. A farm fed jobs with a monitor each must not keep a
        thread and the monitor's open files per finished job; the caller closes them
        outside the lock (farm's monitors reopen lazily if given to a later job).
        """
        done = [j for j in self._jobs if j.done]
        for old in done[: max(0, len(done) - KEEP_DONE_JOBS)]:  # status history, bounded
            self._jobs.remove(old)
        in_use = {id(j.monitor) for j in self._jobs if not j.done}
        released = {k: m for k, m in self._monitors.items() if id(m) not in in_use}
        for key in released:
            del self._monitors[key]
        return list(released.values())

    def _monitor_thread(self, monitor: Any) -> Any:
        if monitor is None:
            return _NullMonitor()
        with self._cond:
            wrapped = self._monitors.get(id(monitor))
            if wrapped is None:
                wrapped = MonitorThread(monitor)
                self._monitors[id(monitor)] = wrapped
            return wrapped

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


class _NullMonitor:
    """Monitor used when a job has none."""

    def then(self, callback: Any) -> None:
        """No hooks to wait for: run ``callback`` now."""
        callback()

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def _slot(name: str) -> int:
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else 0


def _start_control(dist: Distributor) -> ControlServer | None:
    """Open the control socket; a farm without one still runs (logged)."""
    server = ControlServer(dist)
    try:
        return server if server.start() else None
    except OSError as exc:
        log.warning("no control socket (farm status will not see this farm): %s", exc)
        return None


_live: weakref.WeakSet[Distributor] = weakref.WeakSet()
_log_files: set[Path] = set()


def _setup_log_file(path: Path) -> None:
    """Attach a file handler for the 'farm' logger once per path (tail -f log/distributor.log)."""
    path = path.resolve()
    if path in _log_files:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger("farm")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    _log_files.add(path)


@atexit.register
def _close_all() -> None:
    """Interpreter exit (incl. Ctrl-C out of a shell): leave no guest behind."""
    for dist in list(_live):
        try:
            dist.close()
        except Exception:
            log.exception("closing distributor at exit")
