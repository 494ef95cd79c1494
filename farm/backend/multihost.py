"""``multihost`` backend: guests spread over several libvirt hypervisor hosts.

One per-host backend (a :class:`~farm.backend.libvirt.LibvirtBackend` per
``[[hypervisors]]`` URI) does the libvirt work; this class only decides where
a guest goes and keeps the books.

Placement: a guest goes to the least-loaded host (fewest guests, then lowest
fraction of its own ``max_machines``, then config order) among hosts that are
under their own limit and not backing off. A spawn that fails there puts that
host in back-off and the next host is tried at once, so the others take its
share; only when every host is full or failing does ``spawn`` raise (the
slot then backs off itself).

Limits compose as ``guests on host h <= hypervisors[h].max_machines`` and
``sum over hosts <= the Distributor's limit`` (``max_machines`` /
``set_max_machine_value``, which stays the one knob for the total); the
farm's real capacity is ``min(limit, sum of the limits of hosts that are up)``.

Host states: ``up`` (takes guests), ``backoff`` (a spawn failed; skipped until
``next_retry``), ``down`` (connection lost or refused; reconnected by a prober
thread at ``next_retry``). Retries back off exponentially from
``retry_min`` to ``hypervisor_retry_max`` seconds and reset after a
successful spawn. When a host's connection is lost, every guest placed there
reads dead at once (``alive()`` is False), so each slot re-queues its set
and respawns -- on the other hosts. ``status()`` is what ``farm status`` shows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.backend.base import Backend, Guest
from farm.config import FarmConfig, HypervisorConfig
from farm.errors import BackendError, FarmError

log = logging.getLogger(__name__)

#: builds the backend of one host; the callback reports a lost connection (a reason)
HostFactory = Callable[[FarmConfig, HypervisorConfig, Callable[[str], None]], Backend]


def libvirt_host(
    config: FarmConfig, host: HypervisorConfig, on_lost: Callable[[str], None]
) -> Backend:
    """The default per-host backend: a LibvirtBackend on the host's URI."""
    from farm.backend.libvirt import LibvirtBackend

    return LibvirtBackend(config, host=host, on_lost=on_lost)


@dataclass
class Host:
    """Book-keeping of one hypervisor host (guarded by the HypervisorsBackend's lock)."""

    config: HypervisorConfig
    backend: Backend
    order: int
    state: str = "down"  # up | backoff | down
    guests: set[str] = field(default_factory=set)
    error: str | None = None
    failures: int = 0
    next_retry: float = 0.0  # monotonic
    generation: int = 0  # bumped when the connection is lost: older guests are dead
    spawned: int = 0
    lost: int = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def limit(self) -> int:
        return self.config.max_machines

    def load(self) -> tuple[int, float, int]:
        """Sort key of least-loaded-first placement."""
        return len(self.guests), len(self.guests) / self.limit, self.order


class MultiHostGuest(Guest):
    """A guest on one host; reads dead as soon as that host's connection is lost."""

    def __init__(
        self, inner: Guest, host: Host, generation: int, owner: HypervisorsBackend
    ) -> None:
        self.name = inner.name
        self.inner = inner
        self.host = host
        self._generation = generation
        self._owner = owner
        self._released = False

    @property
    def host_lost(self) -> bool:
        """True when the host lost its connection since this guest started."""
        return self.host.generation != self._generation

    @property
    def pid(self) -> int | None:
        return self.inner.pid

    @property
    def console_log(self) -> Path | None:
        return self.inner.console_log

    def describe(self) -> str:
        return f"{self.inner.describe()} on {self.host.name}"

    def address(self, timeout: float) -> tuple[str, int]:
        return self.inner.address(timeout)

    def alive(self) -> bool:
        return not self.host_lost and self.inner.alive()

    def destroy(self) -> None:
        try:
            self.inner.destroy()
        except FarmError as exc:
            if not self.host_lost:
                raise
            log.info("%s: host %s is gone, guest with it (%s)", self.name, self.host.name, exc)
        finally:
            if not self._released:
                self._released = True
                self._owner._release(self.host, self.name)


class HypervisorsBackend(Backend):
    """Places guests on several hypervisor hosts, backs off failing hosts, reports status."""

    kind = "multihost"

    def __init__(
        self,
        config: FarmConfig,
        hosts: Sequence[HypervisorConfig] | None = None,
        *,
        factory: HostFactory = libvirt_host,
        retry_min: float = 1.0,
        retry_max: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        prober: bool = True,
    ) -> None:
        self.config = config
        hosts = config.hypervisors if hosts is None else tuple(hosts)
        if not hosts:
            raise BackendError("the multihost backend needs at least one [[hypervisors]] entry")
        self.retry_min = retry_min
        self.retry_max = config.hypervisor_retry_max if retry_max is None else retry_max
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.hosts: list[Host] = []
        for i, hv in enumerate(hosts):
            host = Host(hv, None, i)  # type: ignore[arg-type]  # backend set just below
            host.backend = factory(config, hv, self._lost_callback(host))
            self.hosts.append(host)
        self._prober: threading.Thread | None = None
        if prober:
            self._prober = threading.Thread(target=self._probe_loop, name="farm-hosts", daemon=True)

    # -- Backend interface ------------------------------------------------------------
    def check(self) -> None:
        """Check every host; unreachable ones back off, but at least one must be up."""
        for host in self.hosts:
            try:
                host.backend.check()
            except FarmError as exc:
                log.warning("hypervisor %s (%s) unavailable: %s", host.name, host.config.uri, exc)
                with self._lock:
                    self._failed(host, str(exc), down=True)
            else:
                with self._lock:
                    host.state, host.error = "up", None
        if not any(h.state == "up" for h in self.hosts):
            raise BackendError(
                "no hypervisor host is reachable: "
                + "; ".join(f"{h.name}: {h.error}" for h in self.hosts)
            )
        if self.config.max_machines > self.capacity:
            log.warning(
                "max_machines %d exceeds the hosts' total limit %d: the extra slots cannot boot",
                self.config.max_machines,
                self.capacity,
            )
        if self._prober is not None and not self._prober.is_alive():
            self._prober.start()

    def spawn(self, name: str, token: str) -> Guest:
        """Start ``name`` on the least-loaded usable host; fall over to the next on failure."""
        tried: list[str] = []
        errors: list[str] = []
        while True:
            with self._lock:
                if self._closed:
                    raise BackendError("backend closed")
                host = self._pick(tried)
                if host is None:
                    raise BackendError(f"no hypervisor host can take {name}: {self._why(errors)}")
                host.guests.add(name)
                generation = host.generation
                retrying = host.state != "up"
            tried.append(host.name)
            unreachable = retrying
            try:
                if retrying:
                    log.info("retrying hypervisor %s", host.name)
                    _probe(host.backend)
                unreachable = False
                guest = host.backend.spawn(name, token)
            except FarmError as exc:
                with self._lock:
                    host.guests.discard(name)
                    self._failed(host, str(exc), down=unreachable)
                errors.append(f"{host.name}: {exc}")
                log.warning(
                    "%s: spawn on %s failed (%s); trying another host", name, host.name, exc
                )
                continue
            except BaseException:
                with self._lock:
                    host.guests.discard(name)
                raise
            with self._lock:
                host.state, host.error, host.failures = "up", None, 0
                host.spawned += 1
                if host.generation != generation:  # lost while we were spawning
                    log.warning("%s: host %s was lost during the spawn", name, host.name)
            log.info("%s placed on %s (%d/%d)", name, host.name, len(host.guests), host.limit)
            return MultiHostGuest(guest, host, generation, self)

    def reap_stale(self) -> list[str]:
        """Reap on every host that is up (a host that fails here is only logged)."""
        reaped: list[str] = []
        for host in self.hosts:
            if host.state != "up":
                continue
            try:
                reaped += [f"{host.name}:{n}" for n in host.backend.reap_stale()]
            except FarmError as exc:
                log.error("reaping on %s: %s", host.name, exc)
        return reaped

    def close(self) -> None:
        """Stop the prober and close every host's connection."""
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._prober is not None and self._prober.is_alive():
            self._prober.join(5.0)
        for host in self.hosts:
            try:
                host.backend.close()
            except Exception as exc:
                log.error("closing %s: %s", host.name, exc)

    # -- status -----------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Sum of the per-host limits of hosts that are not down."""
        return sum(h.limit for h in self.hosts if h.state != "down")

    def status(self) -> list[dict[str, Any]]:
        """One dict per host for ``farm status``: state, guests, limit, last error, next retry."""
        now = self._clock()
        with self._lock:
            return [
                {
                    "name": h.name,
                    "uri": h.config.uri,
                    "state": h.state,
                    "machines": len(h.guests),
                    "guests": sorted(h.guests),
                    "limit": h.limit,
                    "network": h.config.network,
                    "last_error": h.error,
                    "failures": h.failures,
                    "next_retry": max(0.0, h.next_retry - now) if h.state != "up" else None,
                    "spawned": h.spawned,
                    "lost": h.lost,
                    "uploads": getattr(h.backend, "uploads", 0),
                }
                for h in self.hosts
            ]

    def host_of(self, guest: Guest) -> str | None:
        """Name of the host a guest of this backend runs on."""
        return guest.host.name if isinstance(guest, MultiHostGuest) else None

    # -- internals (call with self._lock held unless said otherwise) -----------------------
    def _pick(self, tried: list[str]) -> Host | None:
        now = self._clock()
        usable = [
            h
            for h in self.hosts
            if h.name not in tried
            and len(h.guests) < h.limit
            and (h.state == "up" or now >= h.next_retry)
        ]
        return min(usable, key=Host.load, default=None)

    def _why(self, errors: list[str]) -> str:
        now = self._clock()
        parts = list(errors)
        for h in self.hosts:
            if h.state != "up" and now < h.next_retry:
                parts.append(f"{h.name} {h.state} for {h.next_retry - now:.1f}s ({h.error})")
            elif len(h.guests) >= h.limit:
                parts.append(f"{h.name} full ({len(h.guests)}/{h.limit})")
        return "; ".join(parts) or "no host configured"

    def _failed(self, host: Host, error: str, *, down: bool = False) -> None:
        """Back ``host`` off exponentially (``down``: unreachable, else a failed spawn)."""
        host.failures += 1
        host.error = error
        delay = min(self.retry_max, self.retry_min * 2 ** (host.failures - 1))
        host.next_retry = self._clock() + delay
        host.state = "down" if down or getattr(host.backend, "lost", None) else "backoff"
        log.warning("hypervisor %s %s for %.1fs: %s", host.name, host.state, delay, error)
        self._wake.set()

    def _release(self, host: Host, name: str) -> None:
        with self._lock:
            host.guests.discard(name)

    def _lost_callback(self, host: Host) -> Callable[[str], None]:
        def lost(reason: str) -> None:  # from libvirt's event thread: no backend calls here
            with self._lock:
                host.generation += 1
                host.lost += 1
                if host.state == "up":
                    host.failures = 0  # a host that was fine starts its back-off short
                self._failed(host, f"connection lost: {reason}", down=True)

        return lost

    def _probe_loop(self) -> None:
        """Reconnect hosts that are down once their back-off has passed (own thread)."""
        while True:
            with self._lock:
                if self._closed:
                    return
                now = self._clock()
                due = [h for h in self.hosts if h.state == "down" and now >= h.next_retry]
                waits = [h.next_retry - now for h in self.hosts if h.state != "up"]
            for host in due:
                try:
                    _probe(host.backend)
                except FarmError as exc:
                    with self._lock:
                        self._failed(host, str(exc), down=True)
                else:
                    with self._lock:
                        back = host.state == "down"
                        if back:
                            host.state = "up"
                            log.info("hypervisor %s is back", host.name)
                    if back:  # no lock held: the Distributor fills the new room
                        self._capacity_grew()
            timeout = max(0.05, min(waits, default=1.0)) if not due else 0.0
            self._wake.wait(min(timeout, 1.0))
            self._wake.clear()


def _probe(backend: Backend) -> None:
    """Ask a per-host backend whether its hypervisor answers (``probe()`` or ``check()``)."""
    probe = getattr(backend, "probe", None)
    if probe is not None:
        probe()
    else:
        backend.check()
