"""Slot: one place of the farm, a thread running boot -> wait -> run sets -> close -> reboot.

A slot talks to the Distributor only through its :class:`~farm.core.ports.SlotPort`
and boots guests with what its :class:`~farm.core.ports.SlotEnvironment` holds.
What a failure means is decided by :func:`farm.core.policy.classify`:
a bad set fails at once and the guest serves the next set; a lost guest
(crash, hang, lost connection) is destroyed, its set re-queued and a new guest
booted; boot failures of every kind (an unexpected exception included) back
off exponentially (capped) up to ``boot_retries`` (a boot whose guest process
died or was stopped, a kill from outside, waits the current step without
doubling it: it says nothing about the setup); a bad configuration gives
up at once. A :class:`~farm.core.bootwatch.BootWatch` ends a boot whose guest
is stopped or makes no progress in seconds, not at ``boot_timeout``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from farm.backend.base import Guest
from farm.core.bootwatch import BootWatch
from farm.core.policy import Phase, Verdict, classify
from farm.core.ports import Assignment, MonitorPort, SlotEnvironment, SlotPort
from farm.core.records import RunRecord
from farm.errors import AgentError, BackendError, BootError, FarmError, SessionError
from farm.events import Event
from farm.session.base import AbstractSession

log = logging.getLogger(__name__)

_BACKOFF_CAP = 30.0
#: back-off after the first failed boot (then doubling): a guest killed while booting is
#: common under chaos and costs its slot a reboot already; a broken setup still gives up
_BACKOFF_FIRST = 0.25
#: longest a running set waits before re-checking that its guest process lives
_ALIVE_CHECK = 0.5


class _GuestLost(Exception):
    """Internal: the guest must be replaced."""


class Slot(threading.Thread):
    """Keeps one guest alive and feeds it the runs its port hands out."""

    def __init__(self, env: SlotEnvironment, port: SlotPort, name: str) -> None:
        super().__init__(name=f"farm-{name}", daemon=True)
        self.env = env
        self.port = port
        self.machine_name = name
        self.log = log.getChild(name)
        self.state = "new"
        self.retiring = False
        self.killed = threading.Event()
        self.guest: Guest | None = None
        self.session: AbstractSession | None = None
        self.current: RunRecord | None = None
        self.address: tuple[str, int] | None = None
        self.started_at = time.time()
        self.ready_at: float | None = None
        self.restarts = 0
        self.boot_failures = 0
        self.sets_done = 0
        self.error: BaseException | None = None
        self._hung: str | None = None  # why the BootWatch ended the current boot
        self._watch: BootWatch | None = None  # watches the current guest from spawn to teardown
        self._lost_outside = False  # the last guest destroyed had died or was stopped
        self._backoff_steps = 0  # doublings of the boot back-off so far
        self._stop_set = threading.Event()
        self._lock = threading.Lock()
        self._held: MonitorPort | None = None  # holds this thread's calls until the next start

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
        if session is not None:  # the slot loop leaves run() at once, not at its next poll
            session.interrupt("machine killed")
        self._destroy_guest()

    def stop_set(self) -> None:
        """Stop the running set on its guest (the slot does it); the guest stays up."""
        self._stop_set.set()

    def begin_set(self, run: RunRecord) -> None:
        """Called by the port, under its lock, when it hands ``run`` to this slot."""
        self._stop_set.clear()
        self.current = run
        self.state = "running"

    def end_set(self) -> None:
        """Called by the port, under its lock, when the run is reported: the slot is idle."""
        self.current = None
        self.state = "idle"

    def settled(self, run: RunRecord) -> None:
        """Called by the port once a finished run is settled (on its monitor's thread)."""
        self.log.info("set %s #%s finished", run.key, run.index)

    def _wake(self) -> None:
        """Wake this slot wherever it waits: for work, or inside the backend for a guest."""
        self.port.wake()
        self.env.backend.wake()

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
                    if self.killed.is_set():  # farm stops it (close, Ctrl-C): nothing lost
                        self.log.info("machine stopped: %s", exc)
                        break
                    self.log.warning("guest lost: %s; replacing it", exc)
                    self.restarts += 1
                finally:
                    self._teardown()
        except BaseException as exc:
            self.error = exc
            self.log.exception("machine failed: %s", exc)
            if not self.retiring:  # no replacement slot that would fail the same way, in a loop
                self.port.gave_up(self, exc)
        finally:
            self._teardown()
            self.state = "gone"
            self.port.exited(self)

    def _boot(self) -> bool:
        """Spawn a guest and attach a session; False if the slot should stop."""
        cfg = self.env.config
        while not self.retiring:
            self.state = "waiting-boot-slot"
            with self.env.boot_slots:
                if self.retiring:
                    return False
                self.state = "booting"
                t0 = time.monotonic()
                self._hung, self._lost_outside = None, False
                try:
                    self._spawn_and_attach(t0)
                except Exception as exc:  # every kind counts: a TypeError must not loop unbounded
                    self._teardown()
                    if self.killed.is_set() or self.retiring:
                        self.log.info("boot abandoned: machine is shutting down")
                        return False
                    self.boot_failures += 1
                    verdict = classify(exc, Phase.BOOT)
                    self.log.error(
                        "boot %d %s after %.1fs: %s",
                        self.boot_failures,
                        f"hung ({self._hung})" if self._hung else "failed",
                        time.monotonic() - t0,
                        exc
                        if isinstance(exc, FarmError | OSError)
                        else f"{type(exc).__name__}: {exc}",
                    )
                    if verdict is Verdict.GIVE_UP or self.boot_failures >= cfg.boot_retries:
                        self.error = exc
                        if verdict is Verdict.GIVE_UP:
                            self.log.error("giving up: a configuration error is not retried")
                        else:
                            self.log.error("giving up after %d failed boots", self.boot_failures)
                        self.port.gave_up(self, exc)
                        return False
                    delay = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2**self._backoff_steps)
                    if not self._lost_outside:  # a guest killed or stopped from outside
                        self._backoff_steps += 1  # says nothing about the setup: no doubling
                else:
                    self.env.boot_clock.record(time.monotonic() - t0)
                    self.boot_failures = self._backoff_steps = 0
                    self.ready_at = time.time()
                    self.state = "ready"
                    self.log.info(
                        "ready at %s:%d in %.2fs", *self.address or ("?", 0), time.monotonic() - t0
                    )
                    return True
            if self.killed.wait(delay):
                return False
        return False

    def _spawn_and_attach(self, started: float) -> None:
        cfg = self.env.config
        deadline = started + cfg.boot_timeout
        self.log.info("spawning guest")
        guest = self.env.backend.spawn(self.machine_name, self.env.token)
        with self._lock:
            self.guest = guest
        if self.killed.is_set():
            raise BackendError("killed while booting")
        watch = BootWatch(guest, self.env.boot_clock, self._hung_guest, started)
        with self._lock:
            self._watch = watch
        watch.start()
        self.address = guest.address(max(0.1, deadline - time.monotonic()))
        session = self.env.sessions(*self.address)
        with self._lock:
            self.session = session
        session.connect(timeout=max(0.5, deadline - time.monotonic()), alive=guest.alive)
        watch.booted()
        if self._hung is not None:  # it hung just as the handshake succeeded
            raise BootError(f"{guest.describe()}: boot hung: {self._hung}")

    def _hung_guest(self, reason: str, booting: bool) -> None:
        """BootWatch thread: the guest hangs or died; end what waits for it now."""
        with self._lock:
            session = self.session
        if not booting:  # the slot loop sees the session fail and replaces the guest
            self.log.warning("guest lost: %s", reason)
            if session is not None:
                session.interrupt(reason)
            return
        self._hung = reason
        self.log.warning("booting guest hung: %s; destroying it", reason)
        if session is not None:
            session.interrupt(f"boot hung: {reason}")
        self._destroy_guest()  # ends the boot attempt and frees its boot slot

    def _serve(self) -> None:
        try:
            while True:
                self.state = "idle"
                work = self.port.acquire(self, self._release_held)
                if work is None:
                    return
                self.state = "running"
                try:
                    self._run_set(work)
                finally:
                    self.current = None
        finally:
            self._release_held()

    def _hold(self, monitor: MonitorPort) -> None:
        """Hold back what this thread tells ``monitor`` until the next start request is out.

        From a set's last events to the next start the guest idles: the monitor's
        worker (its hooks, the settling, the log line) waits until the request is
        sent instead of competing with this thread for the interpreter. Released
        before the port waits for work, at the next start and when serving ends.
        """
        if self._held is not monitor:
            self._release_held()
            monitor.hold()
            self._held = monitor

    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()

    def _run_set(self, work: Assignment) -> None:
        run = work.run
        variant: Any = run.variant
        reset = getattr(variant, "reset_jobs", None)  # farm TaskSets count jobs per run
        if reset is not None:
            reset()
        try:
            stopped = self._drive(work)
        except Exception as exc:  # an unexpected one replaces the guest; set_tries bounds it
            verdict = classify(exc, Phase.RUN)
            if verdict is Verdict.BAD_INPUT:
                self.log.error("set %s #%s is bad input, given up: %s", run.key, run.index, exc)
                self.port.failed(self, work, count_try=True, give_up=True)
                return  # the guest is healthy: it serves the next set
            level = logging.INFO if self.killed.is_set() else logging.WARNING  # farm stops it
            self.log.log(level, "set %s #%s interrupted: %s", run.key, run.index, exc)
            self.port.failed(self, work, count_try=not self.killed.is_set(), give_up=False)
            if isinstance(exc, SessionError | BackendError | OSError):
                raise _GuestLost(str(exc)) from exc
            raise _GuestLost(f"{type(exc).__name__}: {exc}") from exc
        if stopped:
            self.log.info("set %s #%s stopped on request", run.key, run.index)
            self.port.failed(self, work, count_try=False, give_up=False)
            return
        self.sets_done += 1
        self.port.finished(self, work)  # which says so in the log once the set is settled

    def _drive(self, work: Assignment) -> bool:
        """Start the run and pass its events on until it finishes; True if stopped on request."""
        cfg = self.env.config
        run, monitor = work.run, work.monitor
        session, guest = self.session, self.guest
        if session is None or guest is None:
            self._release_held()
            monitor.started(run)
            raise BackendError("no guest")
        limit = None if cfg.set_time_limit is None else time.monotonic() + cfg.set_time_limit
        record = getattr(run.variant, "record", None)  # farm TaskSets keep their own counts
        # the guest idles until the start request reaches it: everything not needed for that
        # request (monitor hook, log line) comes after it, while the guest runs the set. No
        # alive() before it either: the BootWatch interrupts the session the moment a guest
        # dies (pidfd) or within its up_poll when stopped, and the loop below checks too
        try:
            session.start(run.variant, *work.params)
        finally:  # the monitor hears of the start before its events or its stop, either way
            self._release_held()  # the previous set's calls: queued before this one's
            monitor.started(run)
        # one INFO line per set (its "finished", see settled()): at a set a millisecond, a
        # second line cost the host more than all of the dispatch bookkeeping together
        self.log.debug("set %s #%s started", run.key, run.index)
        next_check = time.monotonic() + _ALIVE_CHECK
        while not session.finished():
            if self.killed.is_set():
                raise BackendError("machine killed")
            if self._stop_set.is_set():
                # the agent ends every job with EXIT_EXTERNAL and sends no JOBS_DONE: the
                # set never finishes, so leave the loop instead of waiting for it
                try:
                    session.stop()
                except AgentError as exc:
                    if exc.code != "not_running":  # it ended meanwhile: nothing to stop
                        raise
                self._pass_on(work, session.run(timeout=0.0), record)
                return True
            # events, a lost connection and kill() wake run() at once; the timeout
            # only bounds how late a dead guest process, a stop or the time limit is noticed
            wait = _ALIVE_CHECK
            if limit is not None:
                wait = max(0.0, min(wait, limit - time.monotonic()))
            events = session.run(timeout=wait)
            if session.finished():  # the rest until the next start request: see _hold()
                self._hold(monitor)
            self._pass_on(work, events, record)
            # at most every _ALIVE_CHECK, not after every batch of events: alive() costs
            # psutil calls (or a hypervisor's answer), and the BootWatch interrupts the
            # session the moment the guest process exits anyway
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + _ALIVE_CHECK
                if not guest.alive():
                    raise BackendError(f"guest process {guest.describe()} died or is stopped")
            if limit is not None and time.monotonic() > limit:
                self.log.info("set %s #%s reached its time limit; stopping it", run.key, run.index)
                session.stop()
                break
        return False

    @staticmethod
    def _pass_on(work: Assignment, events: list[Event], record: Any) -> None:
        """Count a batch of events into the task set and hand it to the monitor as one call."""
        if not events:
            return
        if record is not None:
            for event in events:
                record(event)
        work.monitor.events(work.run, events)

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
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()
        if guest is not None:
            self._lost_outside = not guest.alive()
            self.log.info("destroying guest")
            try:
                guest.destroy()
            except Exception as exc:
                self.log.error("destroying guest failed: %s", exc)

    def info(self) -> dict[str, object]:
        """Snapshot for status displays."""
        cur = self.current
        return {
            "name": self.machine_name,
            "state": self.state,
            "address": f"{self.address[0]}:{self.address[1]}" if self.address else None,
            "current": cur.label if cur else None,
            "uptime": time.time() - self.ready_at if self.ready_at else 0.0,
            "restarts": self.restarts,
            "sets_done": self.sets_done,
            "retiring": self.retiring,
        }
