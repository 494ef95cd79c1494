"""Machine: one slot of the farm, a thread running boot -> wait -> run sets -> close -> reboot.

On a crash, hang (no heartbeat) or lost connection the running set goes back
to the front of its job (``__taskset_stop__``), the guest is destroyed and a
new one booted. After ``set_tries`` failures of one set it is given up
(``__taskset_bad__``). Boot failures back off exponentially (capped) and after
``boot_retries`` consecutive failures the slot gives up until new work arrives.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from farm.errors import BackendError, FarmError, SessionError

if TYPE_CHECKING:
    from farm.backend.base import Guest
    from farm.distributor import Distributor
    from farm.job import Job

log = logging.getLogger(__name__)

_BACKOFF_CAP = 30.0
#: longest a running set waits before re-checking that its guest process lives
_ALIVE_CHECK = 0.5


class _GuestLost(Exception):
    """Internal: the guest must be replaced."""


class Machine(threading.Thread):
    """A slot that keeps one guest alive and feeds it task sets."""

    def __init__(self, distributor: Distributor, name: str) -> None:
        super().__init__(name=f"farm-{name}", daemon=True)
        self.dist = distributor
        self.machine_name = name
        self.log = log.getChild(name)
        self.state = "new"
        self.retiring = False
        self.killed = threading.Event()
        self.guest: Guest | None = None
        self.session: Any = None
        self.current: tuple[Job, Any] | None = None
        self.address: tuple[str, int] | None = None
        self.started_at = time.time()
        self.ready_at: float | None = None
        self.restarts = 0
        self.boot_failures = 0
        self.sets_done = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    # -- control from other threads --------------------------------------------
    def retire(self) -> None:
        """Finish the current set, then shut down."""
        self.retiring = True
        self._wake()

    def kill(self) -> None:
        """Destroy the guest now; the running set is re-queued and reported stopped."""
        self.retiring = True
        self.killed.set()
        self._wake()
        with self._lock:
            session = self.session
        interrupt = getattr(session, "interrupt", None)
        if interrupt is not None:  # the slot loop leaves run() at once, not at its next poll
            interrupt("machine killed")
        self._destroy_guest()

    def _wake(self) -> None:
        """Wake this slot wherever it waits: for work, or inside the backend for a guest."""
        self.dist._wake()
        self.dist._backend.wake()

    # -- the slot loop ---------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.retiring:
                if not self._boot():
                    break
                try:
                    self._serve()
                    break  # no more work for this slot (idle, retired or paused)
                except _GuestLost as exc:
                    self.log.warning("guest lost: %s; replacing it", exc)
                    self.restarts += 1
                finally:
                    self._teardown()
        except BaseException as exc:
            self.error = exc
            self.log.exception("machine failed: %s", exc)
        finally:
            self._teardown()
            self.state = "gone"
            self.dist._machine_exited(self)

    def _boot(self) -> bool:
        """Spawn a guest and attach a session; False if the slot should stop."""
        cfg = self.dist.config
        while not self.retiring:
            self.state = "waiting-boot-slot"
            with self.dist._boot_slots:
                if self.retiring:
                    return False
                self.state = "booting"
                t0 = time.monotonic()
                try:
                    self._spawn_and_attach()
                except FarmError as exc:
                    self._teardown()
                    if self.killed.is_set() or self.retiring:
                        self.log.info("boot abandoned: machine is shutting down")
                        return False
                    self.boot_failures += 1
                    self.log.error(
                        "boot %d failed after %.1fs: %s",
                        self.boot_failures,
                        time.monotonic() - t0,
                        exc,
                    )
                    if self.boot_failures >= cfg.boot_retries:
                        self.error = exc
                        self.log.error("giving up after %d failed boots", self.boot_failures)
                        self.dist._boot_gave_up(self, exc)
                        return False
                    delay = min(_BACKOFF_CAP, 0.5 * 2**self.boot_failures)
                else:
                    self.boot_failures = 0
                    self.ready_at = time.time()
                    self.state = "ready"
                    self.log.info(
                        "ready at %s:%d in %.2fs", *self.address or ("?", 0), time.monotonic() - t0
                    )
                    return True
            if self.killed.wait(delay):
                return False
        return False

    def _spawn_and_attach(self) -> None:
        cfg = self.dist.config
        deadline = time.monotonic() + cfg.boot_timeout
        self.log.info("spawning guest")
        guest = self.dist._backend.spawn(self.machine_name, self.dist.token)
        with self._lock:
            self.guest = guest
        if self.killed.is_set():
            raise BackendError("killed while booting")
        self.address = guest.address(max(0.1, deadline - time.monotonic()))
        session = self.dist._new_session(*self.address)
        with self._lock:
            self.session = session
        session.connect(timeout=max(0.5, deadline - time.monotonic()), alive=guest.alive)

    def _serve(self) -> None:
        while True:
            self.state = "idle"
            item = self.dist._acquire(self)
            if item is None:
                return
            job, variant = item
            self.current = item
            self.state = "running"
            try:
                self._run_set(job, variant)
            finally:
                self.current = None

    def _run_set(self, job: Job, variant: Any) -> None:
        monitor = job.monitor
        cfg = self.dist.config
        reset = getattr(variant, "reset_jobs", None)
        if reset is not None:
            reset()
        self.log.info("set %s #%s started", job.key, variant.index)
        monitor.__taskset_start__(variant)
        session = self.session
        guest = self.guest
        limit = None if cfg.set_time_limit is None else time.monotonic() + cfg.set_time_limit
        try:
            if session is None or guest is None:
                raise BackendError("no guest")
            session.start(variant, *job.params)
            while not session.finished():
                if self.killed.is_set():
                    raise BackendError("machine killed")
                # events, a lost connection and kill() wake run() at once; the timeout
                # only bounds how late a dead guest process or the time limit is noticed
                wait = _ALIVE_CHECK
                if limit is not None:
                    wait = max(0.0, min(wait, limit - time.monotonic()))
                for event in session.run(timeout=wait):
                    record = getattr(variant, "record", None)
                    if record is not None:
                        record(event)
                    monitor.__taskset_event__(variant, event)
                if not guest.alive():
                    raise BackendError(f"guest process {guest.describe()} died")
                if limit is not None and time.monotonic() > limit:
                    self.log.info(
                        "set %s #%s reached its time limit; stopping it", job.key, variant.index
                    )
                    session.stop()
                    break
        except (FarmError, OSError) as exc:
            self.log.warning("set %s #%s interrupted: %s", job.key, variant.index, exc)
            self.dist._set_failed(self, job, variant, count_try=not self.killed.is_set())
            if isinstance(exc, SessionError | BackendError | OSError):
                raise _GuestLost(str(exc)) from exc
            raise _GuestLost(f"{type(exc).__name__}: {exc}") from exc
        self.sets_done += 1
        self.log.info("set %s #%s finished", job.key, variant.index)
        self.dist._set_finished(self, job, variant)

    # -- cleanup -----------------------------------------------------------------
    def _teardown(self) -> None:
        with self._lock:
            session, self.session = self.session, None
        if session is not None:
            try:
                session.close()
            except Exception as exc:
                self.log.debug("session close: %s", exc)
        self._destroy_guest()

    def _destroy_guest(self) -> None:
        with self._lock:
            guest, self.guest = self.guest, None
        if guest is not None:
            self.log.info("destroying guest")
            try:
                guest.destroy()
            except Exception as exc:
                self.log.error("destroying guest failed: %s", exc)

    def info(self) -> dict[str, Any]:
        """Snapshot for status displays."""
        cur = self.current
        return {
            "name": self.machine_name,
            "state": self.state,
            "address": f"{self.address[0]}:{self.address[1]}" if self.address else None,
            "current": f"{cur[0].key}#{cur[1].index}" if cur else None,
            "uptime": time.time() - self.ready_at if self.ready_at else 0.0,
            "restarts": self.restarts,
            "sets_done": self.sets_done,
            "retiring": self.retiring,
        }
