"""The spare of a warm-start backend: one guest made ahead, handed to the next spawn.

A warm start's restore costs the spawn time that can be paid ahead: so each warm
backend keeps ONE guest ("spare", :class:`~farm.backend.identity_port.Spare`)
restored from the snapshot, running its warm-up set again in its own QEMU
(whose translation cache starts empty) and then waiting for its identity. A
spawn that takes it only writes the identity (name, own key: never on a command
line). The qemu and libvirt backends differ in how a spare is made and handed
over (:mod:`farm.backend.qemu_spare`, :mod:`farm.backend.libvirt_spare`); the
bookkeeping they share is :class:`SparePool`:

- at most one spare, ready or being made, by a daemon maker thread started by
  :meth:`SparePool.refill` after a spawn; spares are numbered ``farm-spare-<n>``
  (the machine a spare will become is not known when it is made);
- a spawn that finds the spare being made waits for it (one spawn waits: there
  is one spare; what is left of its making costs less than a restore of the
  spawn's own, which would compete with it for the CPU) and lifts it out of
  SCHED_IDLE; other spawns meanwhile restore their own;
- a spare made from another snapshot (stale) or whose QEMU died is discarded,
  and the spawn restores;
- MAX_FAILURES consecutive failed spares give spares up (``off`` says why):
  an image or host that cannot make one must not cost every spawn a try;
- :meth:`SparePool.close` (the backend's ``close()``) waits for the spare being
  made and destroys the ready one;
- ``used`` and ``waited`` count the spawns served by a spare and those that
  waited for one (benchmarks read them).

Priority: a spare is made from idle CPU only (farm measures the task set, not
itself): its QEMU runs SCHED_IDLE until a spawn wants it. Farm's own threads do
not run SCHED_IDLE while they hold the GIL: a starved thread holding it would
stall farm's other threads (the spawn's session). :func:`set_policy` sets a
process's (or a thread's) policy. Leaving SCHED_IDLE needs CAP_SYS_NICE or an
RLIMIT_NICE that allows the current nice value (:func:`can_leave_idle`): a farm
without either (the qemu backend run by a user) makes its spares at normal
priority, since a spare it could not lift would stay SCHED_IDLE as a machine.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import resource
import threading
import time
from typing import ClassVar, Generic

from farm.backend.identity_port import G, P, SnapshotError, Spare
from farm.backend.snapshot import Snapshot
from farm.errors import BackendError

log = logging.getLogger(__name__)
SPARE = "farm-spare"
MAX_FAILURES = 3  # consecutive failed spares before farm stops making them


class SparePool(Generic[G, P]):
    """One spare of one backend (at most one, made in a thread): the shared state machine.

    A backend's subclass makes a spare (:meth:`_build`), hands it over (:meth:`_hand_over`)
    and lifts the one being made (:meth:`_lift`); the hooks with a body are optional.
    """

    #: the subclass module's logger (log lines keep their backend's name)
    logger: ClassVar[logging.Logger] = log
    KIND: ClassVar[str] = "guest"  # what a spare is, in log lines
    THREAD: ClassVar[str] = "spare"  # the maker thread's name
    TAKE_WAIT: ClassVar[float] = 30.0  # s a spawn waits for the spare being made
    WAIT: ClassVar[float] = 60.0  # s close() waits for the maker
    #: a spare's making failed (counted; other exceptions are logged as unexpected)
    MAKE_ERRORS: ClassVar[tuple[type[BaseException], ...]] = (BackendError, OSError)
    #: a hand-over failed by the spare: the spawn restores instead
    HAND_OVER_ERRORS: ClassVar[tuple[type[BaseException], ...]] = (SnapshotError,)

    def __init__(self) -> None:
        self.used = 0  # spawns served by a spare
        self.waited = 0  # spawns that waited for the spare being made
        self.off = ""  # why spares were given up ("" = not)
        self._cond = threading.Condition()
        self._ready: Spare[G, P] | None = None
        self._maker: threading.Thread | None = None
        self._waiter = False  # a spawn waits for the spare being made
        self._closed = False
        self._failures = 0
        self._numbers = itertools.count(1)

    @property
    def usable(self) -> bool:
        """Whether spares are made (not given up after repeated failures)."""
        return not self.off

    def take(self, snap: Snapshot, name: str, secret: str) -> G | None:
        """Guest ``name`` made of the spare (waited for if being made); None: there is none.

        ``secret`` is what the backend's spawn got: the guest's own key (qemu) or the
        token it is derived from (libvirt).
        """
        if not self.usable:
            return None
        with self._cond:
            if not self._taking():
                return None
            if self._waiter:  # the spare being made is that spawn's: restore, do not take it
                return None
            if self._ready is None and self._maker is not None and not self._waiter:
                self._waiter = True  # only one spawn waits: there is one spare
                self.waited += 1
                try:
                    self._wait_lifted()
                finally:
                    self._waiter = False
            spare, self._ready = self._ready, None
        if spare is None:
            return None
        if spare.source != snap.path or not spare.guest.alive():
            self.logger.info("spare %s is stale or dead: discarded", spare.guest.name)
            spare.discard()
            return None
        try:
            guest = self._hand_over(spare, name, secret)
        except self.HAND_OVER_ERRORS as exc:  # the spare only: the snapshot may be fine
            self.logger.warning("%s: spare %s failed, restoring: %s", name, self.KIND, exc)
            return None
        self.used += 1
        return guest

    def _settled(self) -> bool:
        return self._ready is not None or self._maker is None

    def _wait_lifted(self) -> None:
        """Wait (lock held) for the spare being made, lifted as soon as :meth:`_lift` can:
        a spare starting up at SCHED_IDLE on a busy host is starved until then."""
        deadline = time.monotonic() + self.TAKE_WAIT
        lifted = False
        while not self._settled():
            lifted = lifted or self._lift()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left if lifted else min(left, 0.005))

    def refill(self, snap: Snapshot) -> None:
        """Start making a spare from ``snap`` unless one is ready or being made."""
        with self._cond:
            if self._closed or not self.usable or self._ready or self._maker is not None:
                return
            self._maker = threading.Thread(
                target=self._make, args=(snap,), name=self.THREAD, daemon=True
            )
            self._maker.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until no spare is being made; True if one is ready (benchmarks, tests)."""
        with self._cond:
            self._cond.wait_for(lambda: self._maker is None, timeout)
            return self._ready is not None

    def close(self) -> None:
        """No more spares: wait for the one being made, destroy the ready one."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()  # a maker waiting in a hook
            maker, spare, self._ready = self._maker, self._ready, None
            making = self._being_made()
        if making is not None:  # its maker then fails at once instead of finishing it
            making.destroy()
        if maker is not None and maker is not threading.current_thread():
            maker.join(self.WAIT)
        if spare is not None:
            spare.discard()

    def _make(self, snap: Snapshot) -> None:
        """The maker thread: one spare, kept unless the backend closed meanwhile."""
        name = f"{SPARE}-{next(self._numbers)}"
        spare = None
        try:
            spare = self._build(snap, name)
        except self.MAKE_ERRORS as exc:
            with self._cond:
                closed = self._closed  # close() gave up the spare being made
                self._failures += 0 if closed else 1
                if self._failures >= MAX_FAILURES:
                    self.off = str(exc)
            if not closed:
                more = " (no more tried)" if self.off else ""
                self.logger.warning("no spare %s%s: %s", self.KIND, more, exc)
        except BaseException:
            self.logger.exception("no spare %s", self.KIND)
        finally:
            with self._cond:
                self._maker = None
                self._made()
                if spare is not None and not self._closed:
                    self._ready, spare = spare, None
                    self._failures = 0
                self._cond.notify_all()
            if spare is not None:  # closed meanwhile
                spare.discard()

    # the backend's hooks

    def _build(self, snap: Snapshot, name: str) -> Spare[G, P] | None:
        """Make spare ``name`` from ``snap`` (the maker thread); None: closed meanwhile."""
        raise NotImplementedError

    def _hand_over(self, spare: Spare[G, P], name: str, secret: str) -> G:
        """Make ``spare`` machine ``name`` and give it its identity; a failure by the spare
        raises one of HAND_OVER_ERRORS (the spare destroyed)."""
        raise NotImplementedError

    def _lift(self) -> bool:
        """SCHED_OTHER for the spare being made (a spawn waits for it; lock held);
        False: not yet possible (asked again every few ms)."""
        return True

    def _taking(self) -> bool:
        """A spawn comes (lock held); False: it restores its own, without waiting."""
        return True

    def _being_made(self) -> G | None:
        """The guest of the spare being made that close() destroys at once (lock held)."""
        return None

    def _made(self) -> None:
        """Forget what the maker recorded of the spare it made (lock held)."""


def set_policy(pid: int, policy: int, threads: bool = False) -> None:
    """Set ``policy`` on ``pid`` (0: this thread), on each of its threads with ``threads``."""
    tids = [pid]
    if threads:
        with contextlib.suppress(OSError):
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    for tid in tids:
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        except OSError as exc:  # gone, or not ours: the spare only runs slower or sooner
            log.debug("cannot set scheduling policy %d of %d: %s", policy, tid, exc)


_CAP_SYS_NICE = 23  # linux/capability.h


@functools.lru_cache(maxsize=1)
def can_leave_idle() -> bool:
    """Whether this process may move its SCHED_IDLE threads back to SCHED_OTHER.

    Linux allows it with CAP_SYS_NICE, or when RLIMIT_NICE covers the thread's nice
    value (``20 - nice``); an unprivileged user has neither by default (EPERM).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            caps = next((line.split()[1] for line in fh if line.startswith("CapEff:")), "0")
        if int(caps, 16) >> _CAP_SYS_NICE & 1:
            return True
    except (OSError, ValueError):
        pass
    soft, _hard = resource.getrlimit(resource.RLIMIT_NICE)
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    ok = soft == resource.RLIM_INFINITY or soft >= 20 - nice
    if not ok:
        log.info(
            "spares are made at normal priority: leaving SCHED_IDLE needs CAP_SYS_NICE "
            "or RLIMIT_NICE >= %d (it is %d)",
            20 - nice,
            soft,
        )
    return ok
