"""``libvirt`` backend (farm's default): guests are transient libvirt domains.

Any libvirt URI works (``qemu:///system``, ``qemu+ssh://host/system``,
``qemu+unix:///system?socket=...``); the default is the embedded driver
``qemu:///embed?root=<state_dir>/libvirt``, which needs no daemon: farm writes
its ``<root>/etc/qemu.conf``, checks the ``libvirt-qemu`` user exists and runs
libvirt's default event loop in a daemon thread (see ``libvirt_xml`` for the
details). libvirt allows one embedded root per process.

Each guest is a domain created with ``createXML`` from the machine profile
and marked with farm's metadata; cleanup never touches unmarked domains. On a
local hypervisor the serial console is a pty that QEMU logs to
``log/<name>.console.log`` and ``screen -xr <name>`` attaches to; the QEMU
pid (found by the domain UUID on QEMU's command line) and the screen pid are
recorded so a watchdog reaps both if farm is SIGKILLed. On a remote host the
agent's hostfwd listens on all addresses, farm copies the console into the
local log over a libvirt stream, and the daemon destroys the domains when
farm's connection drops (AUTODESTROY).

As one host of a multi-host farm (``host=``, see ``multihost``) the URI,
network and image directory come from its ``[[hypervisors]]`` table: a
bridge there is the host's own (farm neither creates it nor runs its dhcpd;
the guest's address is farm's static reservation for its machine id on the
host's ``bridge_subnet``), a host with ``image_dir`` gets kernel and initrd
uploaded as storage volumes (``libvirt_storage``), and a lost connection
(close callback, keepalive) is reported through ``on_lost`` and reopened on
the next use.

With ``network = "bridge"`` (local hypervisors only) each domain gets an
``<interface type='bridge'>`` on farm's bridge with the machine's reserved
MAC (libvirt creates and removes the tap); the agent is reached at the
reserved IP (a warm-started guest takes it from its identity, not from dhcpd:
``libvirt_snapshot``). The backend brings the bridge and farm's dhcpd up at its
first guest and down at ``close()`` if it brought them up (:class:`BackendBridge`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if "libvirt" not in sys.modules:
    # libvirt logs warnings to stderr (two "tainted" lines per guest, ...), garbling farm's
    # console view. It reads this once, when first imported: send its warnings and errors
    # (which reach farm as exceptions anyway) to syslog unless the user chose outputs.
    os.environ.setdefault("LIBVIRT_LOG_OUTPUTS", "3:syslog:farm-libvirt")

import libvirt

from farm.agent.protocol import guest_key
from farm.backend import identity, libvirt_host, libvirt_identity, libvirt_spec, naming
from farm.backend.base import Backend, Guest
from farm.backend.libvirt_console import ConsoleStream
from farm.backend.libvirt_guest import (  # noqa: F401  (re-exported: tests, multihost)
    _PORTS,
    LibvirtGuest,
    _has_uuid,
    _Ports,
    _running,
    destroy_domain,
    ensure_event_loop,
)
from farm.backend.libvirt_snapshot import LibvirtWarm, why_cold
from farm.backend.libvirt_storage import ImageUploader
from farm.backend.libvirt_xml import (
    DomainSpec,
    check_embed_users,
    domain_xml,
    embed_root,
    embed_socket_hint,
    is_local,
    libvirt_nic_model,
    remote_host,
    write_qemu_conf,
)
from farm.backend.screen import quit_screen
from farm.bridge.bridge import BackendBridge, check_bridge_support, plan_for
from farm.bridge.dhcp import mac_for, machine_id
from farm.config import FarmConfig, check_libvirt_uri
from farm.errors import BackendError, ConfigError, ImageError
from farm.procs import ProcessRegistry
from farm.profile import MachineProfile, load_profile

if TYPE_CHECKING:
    from farm.config import HypervisorConfig

log = logging.getLogger(__name__)

_CREATE_ATTEMPTS = 5
Idle = Callable[[], contextlib.AbstractContextManager[object]] | None


class LibvirtBackend(Backend):
    """Spawns guests as transient libvirt domains over one lazily opened connection.

    ``console_stream`` (default: only for remote hosts) copies the console over
    a libvirt stream instead of having QEMU log it and screen attach to its pty.
    """

    kind = "libvirt"

    def __init__(
        self,
        config: FarmConfig,
        profile: MachineProfile | None = None,
        *,
        console_stream: bool | None = None,
        host: HypervisorConfig | None = None,
        on_lost: Callable[[str], None] | None = None,
        warm_start: bool | None = None,
        identity_stream: bool | None = None,
    ) -> None:
        if host is not None:  # one host of a multi-host farm: its URI and network
            config = config.replace(
                libvirt_uri=host.uri,
                network=host.network,
                bridge_name=host.bridge_name,
                bridge_subnet=host.bridge_subnet,
            )
        self.config = config
        self.host = host
        self.profile = (
            profile if profile is not None else load_profile(config.profile, config.image_dir)
        )
        self.registry = ProcessRegistry(config.state_dir)
        self.uri = config.resolved_libvirt_uri
        self.domain_name = naming.domain_namer(config.state_dir, not embed_root(self.uri))
        # a host with its own file system: no local pids, ptys or files of its guests
        self.local = is_local(self.uri) and not (host is not None and host.uploads)
        self.console_stream = (not self.local) if console_stream is None else console_stream
        #: the key goes over a libvirt stream on the identity channel (default: remote hosts)
        self.identity_stream = (not self.local) if identity_stream is None else identity_stream
        self.on_lost = on_lost
        self.lost: str | None = None  # why the last connection was lost, until reopened
        self._lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None
        self._domain_type: str | None = None
        self._watching = False  # a close callback is registered on _conn
        self._net = BackendBridge(config, self.registry)  # network == "bridge": br0 + dhcpd
        self._uploader = (
            ImageUploader(host.image_dir, host.name)
            if host is not None and host.image_dir is not None
            else None
        )
        #: warm starts (config ``warm_start``, on by default); None: cold boots
        self.warm: LibvirtWarm | None = None
        if config.warm_start if warm_start is None else warm_start:
            if why := why_cold(self):
                log.info("warm start off, guests boot cold: %s", why)
            else:
                self.warm = LibvirtWarm(self)

    @property
    def bridged(self) -> bool:
        """True when guests go on farm's bridge (config ``network = "bridge"``)."""
        return self.config.network == "bridge"

    @property
    def host_bridge(self) -> bool:
        """True when the bridge is the hypervisor host's own (multi-host), not farm's."""
        return self.bridged and self.host is not None

    @property
    def uploads(self) -> int:
        """Image volumes uploaded to this host so far."""
        return self._uploader.uploads if self._uploader is not None else 0

    def connection(self) -> libvirt.virConnect:
        """The backend's connection, opened on first use (embedded root prepared first)."""
        with self._lock:
            if self._conn is not None:
                return self._conn
            check_libvirt_uri(self.uri)
            root = embed_root(self.uri)
            if root is not None:
                check_embed_users()
                write_qemu_conf(root)
            ensure_event_loop()
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                if root is not None and "already open" in str(exc):
                    raise BackendError(
                        f"cannot open {self.uri}: libvirt allows one embedded root per process "
                        f"({exc}); use one state_dir per process, or a libvirtd URI"
                    ) from exc
                raise BackendError(f"cannot open libvirt connection {self.uri}: {exc}") from exc
            if embed_root(self.uri) is None:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.setKeepAlive(5, 3)  # notice a dead remote host
                try:
                    conn.registerCloseCallback(self._on_close, None)
                    self._watching = True
                except libvirt.libvirtError as exc:
                    log.debug("%s: no close callback (%s); relying on errors", self.uri, exc)
            log.info("connected to %s", self.uri)
            self._conn = conn
            self.lost = None
            if self._uploader is not None:
                self._uploader.forget()  # a restarted host may have lost its volumes
            return conn

    def _on_close(self, conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        """libvirt's close callback: the daemon went away (EOF, keepalive, error)."""
        why = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "connection error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "daemon closed the connection",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
        }.get(reason)
        if why is None:
            return  # VIR_CONNECT_CLOSE_REASON_CLIENT: farm closed it
        self.connection_lost(f"{self.uri}: {why}", conn)

    def connection_lost(self, reason: str, conn: libvirt.virConnect | None = None) -> None:
        """Forget a dead connection (reopened on next use) and tell ``on_lost``."""
        with self._lock:
            if conn is not None and conn is not self._conn:
                return  # an older connection's late callback
            old, self._conn = self._conn, None
            watching, self._watching = self._watching, False
            if old is None and self.lost is not None:
                return
            self.lost = reason
        log.warning("lost %s", reason)
        if self.on_lost is not None:
            self.on_lost(reason)
        if old is not None:  # not from here: this may run inside libvirt's close callback
            quietly = libvirt_host.close_quietly
            threading.Thread(target=quietly, args=(old, watching), daemon=True).start()

    def probe(self) -> None:
        """Raise BackendError unless the hypervisor answers now (connects if needed)."""
        conn = self.connection()
        try:
            if not conn.isAlive():
                raise BackendError(f"{self.uri}: connection is not alive")
            conn.getLibVersion()
        except libvirt.libvirtError as exc:
            self.connection_lost(f"{self.uri}: {exc}", conn)
            raise BackendError(f"{self.uri} does not answer: {exc}") from exc

    def check(self) -> None:
        for label, path in (("kernel", self.profile.kernel), ("initrd", self.profile.initrd)):
            if path is not None and not Path(path).is_file():
                raise ImageError(f"missing guest {label} {path}: run `farm image build`")
        if self.local and shutil.which(self.profile.qemu) is None:
            raise ConfigError(f"QEMU binary {self.profile.qemu!r} not found (install qemu-system)")
        if self.host_bridge:  # the host's bridge: farm only needs a NIC libvirt can bridge
            if self.profile.nic:
                libvirt_nic_model(self.profile.nic)
        elif self.bridged:
            if not self.local:
                raise ConfigError(
                    f"network = 'bridge' needs a local libvirt URI: farm's bridge is on this "
                    f"host, not on {remote_host(self.uri)}"
                )
            if self.profile.nic:
                libvirt_nic_model(self.profile.nic)  # ConfigError for a board NIC
            check_bridge_support(self.config)
        self.connection()

    def spawn(self, name: str, token: str) -> Guest:
        if self.warm is not None:
            restored = self.warm.spawn(name, token)
            if restored is not None:
                return restored
        guest = self._start(name, token)
        if self.identity_stream and identity.takes_identity(self.profile):
            key, timeout = guest_key(token, name), self.config.boot_timeout
            conn = self.connection()
            libvirt_identity.hand_over_later(conn, guest._dom, name, key, guest.alive, timeout)
            return guest
        return identity.deliver(guest, self.profile, self.config, token, self.local)

    def _start(
        self,
        name: str,
        token: str,
        mode: str = "cold",
        attach: bool = True,
        idle: Idle = None,
        nic: tuple[str, ipaddress.IPv4Address] | None = None,
    ) -> LibvirtGuest:
        """Create guest ``name``'s domain: booting (``cold``), the warm ``template``, or
        paused for a saved state (``warm``; ``attach``: with its screen session); its key
        is delivered by the caller. ``idle``: the context of the ``createXML`` call (a
        spare's: SCHED_IDLE, inherited by the QEMU libvirt forks). ``nic``: (MAC, IP) on
        the bridge instead of the machine's reservation (the warm template's, a spare's)."""
        glog = log.getChild(name)
        conn = self.connection()
        self._clear_name(conn, name, glog)
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        console = (self.config.log_dir / f"{name}.console.log").resolve()
        console.unlink(missing_ok=True)
        if self.bridged:  # libvirt puts the tap on br0; the agent at the reserved IP
            mac, ip = nic or self._reservation(name)
            dom, _ = self._create(conn, name, token, console, glog, mode, idle, mac)
            address = (str(ip), self.config.agent_port)
        else:
            dom, port = self._create(conn, name, token, console, glog, mode, idle)
            address = (remote_host(self.uri) or "127.0.0.1", port)
        qemu = screen = stream = None
        try:
            if self.local:
                qemu = libvirt_host.find_qemu(dom, self.domain_name(name), self.uri)
                if qemu is not None:
                    self.registry.record(name, qemu.pid, "libvirt-qemu", uuid=dom.UUIDString())
            if self.console_stream:
                stream = ConsoleStream(conn, dom, console)
            elif self.local and mode != "template" and attach:
                screen = libvirt_host.start_screen(dom, name, self.registry, glog)
        except BaseException:
            if stream is not None:
                stream.close()
            destroy_domain(dom, glog)
            if screen is not None:
                quit_screen(name, screen)
            if not self.bridged:
                _PORTS.release(address[1])
            self.registry.forget(name)
            self.registry.forget(f"{name}.screen")
            raise
        glog.info(
            "domain %s up (QEMU pid %s), agent at %s:%d, console %s",
            dom.UUIDString(),
            qemu.pid if qemu else "?",
            *address,
            console,
        )
        guest = LibvirtGuest(
            name,
            dom,
            address,
            self.registry,
            qemu=qemu,
            screen=screen,
            console=console,
            stream=stream,
            hostfwd=not self.bridged,
        )
        return guest

    def _create(
        self,
        conn: libvirt.virConnect,
        name: str,
        token: str,
        console: Path,
        glog: logging.Logger,
        mode: str = "cold",
        idle: Idle = None,
        mac: str | None = None,
    ) -> tuple[libvirt.virDomain, int]:
        """createXML: on farm's bridge with ``mac`` (no hostfwd), else with a fresh hostfwd
        port (retried when that port was taken meanwhile)."""
        flags = libvirt_host.start_flags(self.uri)
        flags |= libvirt.VIR_DOMAIN_START_PAUSED if mode == "warm" else 0
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            port = 0 if mac else _PORTS.allocate(self.local)
            spec = self._spec(name, token, None if self.console_stream else console, port, mode)
            if mac:
                bridge = self.config.bridge_name if self.host_bridge else None
                spec = replace(spec, bridge=bridge or self._net.network().plan.bridge, mac=mac)
            xml = domain_xml(spec)
            glog.debug("domain XML:\n%s", xml)
            try:
                with idle() if idle is not None else contextlib.nullcontext():
                    return conn.createXML(xml, flags), port
            except libvirt.libvirtError as exc:
                if port:
                    _PORTS.release(port)
                    if "forwarding" in str(exc) and attempt < _CREATE_ATTEMPTS:
                        glog.info("hostfwd port %d taken, retrying with another", port)
                        continue
                where = f" on bridge {spec.bridge}" if mac else ""
                raise BackendError(
                    f"{name}: libvirt could not start the domain{where}: {exc}"
                    f"{embed_socket_hint(self.uri, name)}"
                ) from exc
        raise AssertionError("unreachable")

    def _reservation(self, name: str) -> tuple[str, ipaddress.IPv4Address]:
        """(MAC, IP) of machine ``name`` on the bridge: farm's dhcpd, or the host's plan."""
        if not self.host_bridge:
            return self._net.network().reservation(name)
        ident = machine_id(name)
        return mac_for(ident), plan_for(self.config).ip_for(ident)

    def _spec(
        self, name: str, token: str, console: Path | None, port: int, mode: str = "cold"
    ) -> DomainSpec:
        """The domain of guest ``name`` (see :func:`libvirt_spec.guest_spec`)."""
        return libvirt_spec.guest_spec(self, name, token, console, port, mode)

    def domain_type(self) -> str:
        """``kvm`` or ``qemu`` (TCG), see :func:`libvirt_spec.domain_type`."""
        if self._domain_type is None:
            self._domain_type = libvirt_spec.domain_type(self)
        return self._domain_type

    def _clear_name(self, conn: libvirt.virConnect, name: str, glog: logging.Logger) -> None:
        """Destroy a leftover farm domain called ``name``; refuse if someone else's has it."""
        libvirt_host.clear_name(conn, self.domain_name(name), self.uri, glog)

    def reap_stale(self) -> list[str]:
        """Destroy farm-marked domains whose owner is dead, then reap recorded processes."""
        reaped = libvirt_host.reap_domains(self.connection(), self.uri)
        reaped += [n for n in self.registry.reap_stale() if n not in reaped]
        return reaped

    def close(self) -> None:
        """Destroy the warm spare, close the connection, take down the bridge if ours."""
        if self.warm is not None:
            self.warm.close()
        with self._lock:
            conn, self._conn = self._conn, None
            watching, self._watching = self._watching, False
        try:
            if conn is not None:
                libvirt_host.close_quietly(conn, watching)
        finally:
            self._net.close()
