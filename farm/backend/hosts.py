"""``hosts`` backend: existing targets (boards, VMs farm did not start) from CIDR ranges.

taskgen's ``Distributor(["172.25.1.0/24", ...])``: every host of the ranges is
a candidate; a ``Guest`` is a *lease* on one host whose agent answered.

Rules:

* Probing runs in parallel on a bounded thread pool (``workers``). A probe is
  ICMP ping first (``ping -c1 -W1``; only as root with ``ping`` installed,
  ``ping=False`` skips it; a ping that cannot tell, exit code >= 2, falls
  through to the handshake), then the session class's ``is_available(host,
  port, probe_timeout)``.
* Unleased hosts, available or not, are probed again every
  ``rescan_interval`` seconds (a scanner thread sleeping on a condition until
  the next probe is due). A released lease is probed again at once.
* A host whose TCP connection is *refused* (it is up, but nothing listens on
  the agent port) on ``drop_after`` consecutive probes is dropped (logged)
  and never probed again -- unless it was available at some point: a target
  that once answered is probably rebooting and is kept. Any other outcome
  (timeout, no ping reply, busy agent) resets the count.
* ``spawn`` leases a free available host (the one free longest), waiting for
  one up to ``boot_timeout`` (then BootError "no available target among N
  hosts"; at once if every host was dropped). The wait re-checks the calling
  slot's ``retiring`` flag whenever it is woken: Slot.retire()/kill()
  call ``wake()``, so no periodic poll is needed.
* ``HostGuest.destroy()`` only gives the host back (nothing remote is killed);
  ``alive()`` is True until the lease is marked failed (``mark_failed()``,
  or the backend is closed). A host whose session was lost mid-set comes
  back through ``destroy()`` and is re-probed like any other.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from farm.backend.base import Backend, Guest
from farm.config import FarmConfig
from farm.errors import BackendError, BootError, ConfigError
from farm.targets import parse_targets

log = logging.getLogger(__name__)

UP, DOWN, REFUSED = "up", "down", "refused"
Probe = Callable[[str, int, float], str]

DEFAULT_RESCAN_INTERVAL = 5.0
_NAMED_TARGETS = 8  # this few hosts were named one by one: say at once when one is dead


@dataclass(eq=False)
class _Host:
    host: str
    port: int
    order: int
    state: str = "new"  # new | probing | free | down | leased | dropped
    refusals: int = 0
    ever_up: bool = False
    up: bool = False  # outcome of the last probe
    probes: int = 0
    lease: HostGuest | None = None
    seq: int = 0  # generation; stale heap entries are skipped

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class HostGuest(Guest):
    """A lease on one existing target; destroy() hands it back to the pool."""

    def __init__(self, backend: ExistingHostsBackend, host: _Host, name: str) -> None:
        self.name = name
        self._backend = backend
        self._host = host
        self._failed = False

    def address(self, timeout: float) -> tuple[str, int]:
        return self._host.host, self._host.port

    def alive(self) -> bool:
        return not self._failed

    def mark_failed(self) -> None:
        """The target is gone; the slot will see alive() False."""
        self._failed = True

    def destroy(self) -> None:
        if not self._first_destroy():
            return
        self._backend._release(self._host, self)

    def describe(self) -> str:
        return f"{self.name} on {self._host.label}"


class ExistingHostsBackend(Backend):
    """Hands out available existing targets; probes and rescans them in the background."""

    kind = "hosts"

    def __init__(
        self,
        config: FarmConfig,
        targets: str | Iterable[str] | Sequence[tuple[str, int]],
        session_class: type | None = None,
        *,
        rescan_interval: float | None = None,
        probe_timeout: float = 2.0,
        ping: bool | None = None,
        workers: int = 32,
        drop_after: int = 12,
        probe: Probe | None = None,
    ) -> None:
        """``probe(host, port, timeout) -> "up" | "down" | "refused"`` replaces the default
        ping + handshake probe (tests); ``ping=None`` pings when root and ping exists."""
        self.config = config
        interval = rescan_interval
        if interval is None:
            interval = getattr(config, "rescan_interval", None) or DEFAULT_RESCAN_INTERVAL
        if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
            raise ConfigError(f"rescan_interval must be a positive number, got {interval!r}")
        if not isinstance(drop_after, int) or drop_after < 1:
            raise ConfigError(f"drop_after must be an integer >= 1, got {drop_after!r}")
        self.rescan_interval = float(interval)
        self.probe_timeout = probe_timeout
        self.drop_after = drop_after
        if session_class is None:
            from farm.session import FarmSession

            session_class = FarmSession
        self.session_class = session_class
        addrs = _as_addresses(targets, config.agent_port)
        self._hosts = [_Host(h, p, i) for i, (h, p) in enumerate(addrs)]
        if ping is None:
            ping = shutil.which("ping") is not None and os.geteuid() == 0
        self._ping = ping
        self._probe: Probe = probe or self._default_probe
        self._workers = max(1, min(workers, len(self._hosts)))
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int, _Host]] = []
        self._tie = itertools.count()
        self._free: dict[int, _Host] = {}  # order -> host, insertion = first seen
        self._closed = False
        self._scanner: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        with self._cond:
            for h in self._hosts:
                self._schedule(h, 0.0)

    # -- Backend interface ---------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of candidate hosts (dropped ones included)."""
        return len(self._hosts)

    def start(self) -> None:
        """Start probing now (spawn() starts it otherwise); idempotent."""
        with self._cond:
            if self._closed:
                raise BackendError("hosts backend is closed")
            if self._scanner is not None:
                return
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="farm-probe")
            self._scanner = threading.Thread(target=self._scan, name="farm-hosts", daemon=True)
            self._scanner.start()
        log.info(
            "probing %d host(s) with %d worker(s) (ping %s, rescan every %gs)",
            len(self._hosts),
            self._workers,
            "on" if self._ping else "off",
            self.rescan_interval,
        )

    def spawn(self, name: str, token: str) -> Guest:
        self.start()
        me = threading.current_thread()
        timeout = self.config.boot_timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise BackendError("hosts backend is closed")
                if getattr(me, "retiring", False):
                    raise BackendError(f"{name}: machine is shutting down")
                if self._free:
                    host = self._free.pop(next(iter(self._free)))
                    host.state = "leased"
                    host.seq += 1
                    guest = HostGuest(self, host, name)
                    host.lease = guest
                    log.getChild(name).info("leased %s", host.label)
                    return guest
                if not self._candidates():
                    raise BootError(f"every target was dropped: {self._dropped()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BootError(
                        f"{name}: no available target among {self._candidates()} hosts "
                        f"within {timeout:g}s ({self._summary()})"
                    )
                self._cond.wait(remaining)  # woken by a free host, close() or wake()

    def wake(self) -> None:
        """Wake spawn() waiters so a retiring or killed machine stops waiting for a host."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for h in self._hosts:
                if h.lease is not None:
                    h.lease.mark_failed()
            self._cond.notify_all()
            scanner, pool = self._scanner, self._pool
        if scanner is not None and scanner is not threading.current_thread():
            scanner.join()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def check(self) -> None:
        if not self._hosts:
            raise ConfigError("no targets given")

    # -- inspection ----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Host counts by state: free, leased, down, dropped, probing, new."""
        with self._cond:
            return self._counts_locked()

    def hosts(self) -> list[dict[str, Any]]:
        """One dict per host: address, state, probes, consecutive refusals, ever available."""
        with self._cond:
            return [
                {
                    "address": h.label,
                    "state": h.state,
                    "probes": h.probes,
                    "refusals": h.refusals,
                    "ever_up": h.ever_up,
                    "guest": h.lease.name if h.lease is not None else None,
                }
                for h in self._hosts
            ]

    def wait_for(self, predicate: Callable[[dict[str, int]], bool], timeout: float) -> bool:
        """Block until ``predicate(counts())`` holds (or timeout); for tests and tools."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._counts_locked()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # -- internals (call with _cond held unless noted) ---------------------------------
    def _counts_locked(self) -> dict[str, int]:
        counts = dict.fromkeys(("free", "leased", "down", "dropped", "probing", "new"), 0)
        for h in self._hosts:
            counts[h.state] += 1
        return counts

    def _candidates(self) -> int:
        return sum(1 for h in self._hosts if h.state != "dropped")

    def _summary(self) -> str:
        c = self._counts_locked()
        return ", ".join(f"{v} {k}" for k, v in c.items() if v)

    def _dropped(self) -> str:
        labels = [h.label for h in self._hosts if h.state == "dropped"]
        more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
        return f"{', '.join(labels[:3])}{more} refused the agent port ({self.drop_after} probes)"

    def _schedule(self, host: _Host, delay: float) -> None:
        host.seq += 1
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._tie), host.seq, host))
        self._cond.notify_all()

    def _scan(self) -> None:
        """Scanner thread: submit due probes, sleep until the next one is due."""
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, seq, host = heapq.heappop(self._heap)
                    if seq != host.seq or host.state in ("leased", "dropped", "probing"):
                        continue
                    if host.state == "free":
                        self._free.pop(host.order, None)
                    host.state = "probing"
                    assert self._pool is not None
                    self._pool.submit(self._probe_one, host)
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(wait)

    def _probe_one(self, host: _Host) -> None:
        """Worker thread: probe ``host`` (no lock held while probing), record the outcome."""
        try:
            result = self._probe(host.host, host.port, self.probe_timeout)
        except Exception as exc:  # a broken probe must not kill the scan
            log.warning("probing %s failed: %s", host.label, exc)
            result = DOWN
        with self._cond:
            host.probes += 1
            if self._closed or host.state != "probing":
                return
            was_up, host.up = host.up, result == UP
            if result == UP:
                if not was_up:
                    log.info("%s is available", host.label)
                host.refusals = 0
                host.ever_up = True
                host.state = "free"
                self._free[host.order] = host
                self._schedule(host, self.rescan_interval)
                return
            if result == REFUSED:
                host.refusals += 1
                if not host.ever_up and host.refusals >= self.drop_after:
                    host.state = "dropped"
                    host.seq += 1
                    log.warning(
                        "%s dropped: connection refused on %d consecutive probes",
                        host.label,
                        host.refusals,
                    )
                    self._cond.notify_all()
                    return
            else:
                host.refusals = 0
            if host.probes == 1 and len(self._hosts) <= _NAMED_TARGETS:  # not a range scan
                log.warning(
                    "%s: %s on the first probe; probing again every %gs",
                    host.label,
                    "connection refused" if result == REFUSED else "no agent answers",
                    self.rescan_interval,
                )
            if was_up:
                log.info("%s is unavailable (%s); rescanning", host.label, result)
            host.state = "down"
            self._schedule(host, self.rescan_interval)

    def _release(self, host: _Host, guest: HostGuest) -> None:
        with self._cond:
            if host.lease is guest:
                host.lease = None
            if self._closed or host.state != "leased":
                return
            host.state = "down"
            log.getChild(guest.name).info(
                "released %s%s", host.label, " (failed)" if not guest.alive() else ""
            )
            self._schedule(host, 0.0)

    def _default_probe(self, host: str, port: int, timeout: float) -> str:
        """Ping (when enabled), then the session class's availability check."""
        if self._ping:
            reply = _ping(host, timeout)
            if reply is False:
                return DOWN
            # None: ping could not tell (no permission, unresolvable name): ask the agent
        checker = getattr(self.session_class, "is_available", None)
        if checker is not None and checker(host, port, timeout):
            return UP
        return _classify(host, port, timeout)


def _as_addresses(
    targets: str | Iterable[str] | Sequence[tuple[str, int]], port: int
) -> list[tuple[str, int]]:
    if isinstance(targets, str):
        return parse_targets(targets, default_port=port)
    items = list(targets)
    if items and all(isinstance(t, tuple) for t in items):
        return [(str(h), int(p)) for h, p in items]
    return parse_targets(items, default_port=port)  # type: ignore[arg-type]


def _ping(host: str, timeout: float) -> bool | None:
    """True: reply; False: no reply; None: ping itself failed (no permission, bad name)."""
    try:
        proc = subprocess.run(
            ["ping", "-c1", "-W1", "-n", host],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=max(timeout, 1.0) + 2.0,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    except OSError:
        return None
    if proc.returncode == 0:
        return True
    return False if proc.returncode == 1 else None


def _classify(host: str, port: int, timeout: float) -> str:
    """After a failed availability check: "refused" if the host actively refused TCP."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return DOWN  # something listens but is not (or not yet) an available agent
    except ConnectionRefusedError:
        return REFUSED
    except OSError:
        return DOWN
