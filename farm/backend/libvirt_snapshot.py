"""Warm start on the libvirt backend: restore guests from one saved template domain.

How (chosen by experiment with libvirt 9.0 and QEMU 7.2): ``virDomainSave`` /
``virDomainRestoreFlags(path, dxml)`` cannot serve several guests, because the
restore's ABI check refuses a changed UUID ("Target domain uuid ... does not
match source") and libvirt refuses two live domains with one UUID. So farm
uses QEMU's own migration under libvirt, as the qemu backend does
(:mod:`farm.backend.snapshot`):

* the *template* is an ordinary farm domain booted with ``farm.identity=wait``;
  once its /init says ``farm-identity: waiting`` on the identity port, farm
  suspends it and, through libvirt's QEMU monitor passthrough
  (``qemuMonitorCommandWithFiles``: ``getfd`` then ``migrate`` to ``fd:``),
  has QEMU write its state into an open file farm holds: the snapshot;
* a restored guest is a new domain with its OWN name, UUID, hostfwd port,
  console and identity socket, the same devices, plus ``-incoming defer``,
  created paused (``VIR_DOMAIN_START_PAUSED``); farm hands QEMU the open
  snapshot (``getfd``, ``migrate-incoming`` from ``fd:``), waits for the load,
  resumes the domain and writes the guest's identity (name, its own key) to
  the port. Any number of domains can load one file at once (each its own fd).

The snapshot is ``<state_dir>/snapshots/lv-<key>.bin`` with a ``.json`` holding
its size and SHA256 (checked before first use; a damaged file is removed and
the guest boots cold, the next one rebuilds it; a file QEMU refuses to load is
removed likewise). The key digests the domain XML with the per-guest parts
neutralised (so memory, CPU, machine, accelerator, NIC, kernel arguments and
extra QEMU arguments are in it), the image files, the QEMU binary's version,
the libvirt and hypervisor versions and the URI (any embedded root counts as
one), and on the bridge the network (:mod:`farm.backend.snapshot_net`). Needs a
local hypervisor (QEMU is handed an open file descriptor); a remote URI boots
cold (logged once).

Bridged (``network = "bridge"``), as on the qemu backend: the template domain's
``<interface type='bridge'>`` has the template's MAC and the guest a static
address below the reservations (``farm.ip=``); a restored domain's interface
has the machine's reserved MAC (a spare's the template's: its machine is not
known yet; libvirt makes each tap) and its identity a ``net`` entry with its
reserved MAC, address and gateway, which /init sets before the agent listens.

Cost: a restore is the qemu backend's plus libvirt's domain start. On libvirt
9.0 with QEMU 7.2 most of that is libvirt verifying an x86 guest CPU at every
start (``qom-list`` + ~400 ``qom-get`` round trips on the monitor, 0.25-1 s on
a busy 2-core host), which no qemu.conf setting skips. So after each warm
spawn the next guest's domain is made ahead, loaded and resumed (its guest
waits for its identity): a spare (:mod:`farm.backend.libvirt_spare`); a spawn
that takes it only hands it its identity.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt
import libvirt_qemu

from farm.agent.protocol import guest_key
from farm.backend import identity, snapshot, snapshot_mem
from farm.backend.identity_port import (
    WAITING,
    SnapshotError,
    SnapshotLoadFailed,
    read_line,
    send_identity,
    warm_up_guest,
)
from farm.backend.libvirt_identity import StreamChannel, open_port
from farm.backend.libvirt_spare import Spares
from farm.backend.libvirt_spec import warm_net
from farm.backend.libvirt_xml import domain_xml, embed_root
from farm.backend.snapshot import (
    FORMAT,
    Snapshot,
)
from farm.backend.snapshot_net import TEMPLATE_MAC
from farm.bridge.bridge import TapNic
from farm.errors import BackendError, ConfigError, NetworkError

if TYPE_CHECKING:
    from farm.backend.libvirt import Idle, LibvirtBackend
    from farm.backend.libvirt_guest import LibvirtGuest

log = logging.getLogger("farm.backend.libvirt")
_POLL = 0.003  # s between migration status queries
TEMPLATE = "farm-template"
Port = socket.socket | StreamChannel  # a guest's open identity port


def why_cold(backend: LibvirtBackend) -> str:
    """Why guests of ``backend`` cannot be warm started ("" when they can)."""
    if not backend.local:
        return f"{backend.uri} is not on this host (QEMU must be handed the snapshot file)"
    if not identity.takes_identity(backend.profile):
        return f"profile {backend.profile.name!r} is not farm's own guest image"
    return ""


class LibvirtWarm:
    """Warm starts of one libvirt backend: its snapshot, built once, and restores from it."""

    def __init__(self, backend: LibvirtBackend) -> None:
        self.backend = backend
        self.off = ""  # why warm start was given up ("" = not)
        self._lock = threading.Lock()
        self._key: str | None = None
        #: one domain made ahead, loaded and paused, for the next spawn
        self.spares = Spares(self)

    def spawn(self, name: str, token: str) -> LibvirtGuest | None:
        """A guest restored from the snapshot; None when it must boot cold (logged)."""
        if self.off:
            return None
        snap = self.snapshot()
        if snap is None:
            return None
        try:
            guest = self.spares.take(snap, name, token) or self.restore(snap, name, token)
        except SnapshotError as exc:
            log.warning("%s: warm start failed, booting cold: %s", name, exc)
            if isinstance(exc, SnapshotLoadFailed):  # the next spawn rebuilds it
                snapshot.discard(snap.path)
            return None
        self.spares.refill(snap)
        return guest

    def key(self) -> str:
        """Digest of everything the template's saved state depends on (module docstring)."""
        if self._key is None:
            b = self.backend
            net = warm_net(b)
            spec = b._spec("farm-guest", "-", Path("/log"), 0 if net else 1, mode="template")
            spec = replace(
                spec,
                bridge="br" if net else None,  # any bridge: the device is the same
                mac=TEMPLATE_MAC if net else None,
                name="farm-guest",
                title=None,
                owner_pid=0,
                owner_start=0.0,
                owner_host="",
                state_dir=Path("/"),
                identity_socket=Path("/identity.sock") if spec.identity_socket else None,
            )
            conn = b.connection()
            try:
                versions = [conn.getLibVersion(), conn.getVersion()]
            except libvirt.libvirtError as exc:
                raise SnapshotError(f"cannot read versions of {b.uri}: {exc}") from exc
            doc = {
                "format": FORMAT,
                "backend": "libvirt",
                "xml": domain_xml(spec),
                "versions": versions,
                "hypervisor": "embed" if embed_root(b.uri) else b.uri,
                "net": None if net is None else net.key(),
                "qemu": snapshot.qemu_version(spec.emulator),
                "image": snapshot._image_identity(b.profile),
            }
            self._key = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]
        return self._key

    def snapshot(self) -> Snapshot | None:
        """The current snapshot (built now if needed, locked); None: boot this guest cold."""
        try:
            return self.ensure()
        except snapshot.SnapshotCorrupt as exc:
            log.warning("%s; this guest boots cold, the next one rebuilds it", exc)
            return None
        except (SnapshotError, BackendError, NetworkError) as exc:  # (bridged: br0 or dhcpd)
            with self._lock:
                if not self.off:
                    log.warning("warm start off, guests boot cold: %s", exc)
                self.off = str(exc)
            return None

    def ensure(self) -> Snapshot:
        """The snapshot: reused if intact (SnapshotCorrupt if damaged: removed), else built."""
        key = self.key()
        folder = (Path(self.backend.config.state_dir) / "snapshots").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"lv-{key}.bin"
        with (folder / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = snapshot._load(path, key)
            if found is not None:
                with contextlib.suppress(OSError):
                    os.utime(path.with_suffix(".json"))  # last use, for _prune
                return found
            snapshot._prune(folder, keep=path)
            return self.build(path, key)

    def build(self, path: Path, key: str) -> Snapshot:
        """Boot the template domain until it waits for its identity, save it to ``path``."""
        b, started = self.backend, time.monotonic()
        tmp = path.with_suffix(".part")
        name = f"{TEMPLATE}-{os.getpid()}"
        log.info("building snapshot %s from domain %s", path.name, name)
        guest = b._start(name, "-", mode="template", nic=self.template_nic())
        try:
            with open_port(b.connection(), guest._dom, self.port(name), guest.alive) as port:
                line = read_line(port, b.config.boot_timeout, guest.alive)  # type: ignore[arg-type]
                if not line.startswith(WAITING):
                    raise SnapshotError(f"template guest said {line[:200]!r}, not {WAITING!r}")
                guest._dom.suspend()
                with tmp.open("wb") as out:
                    _monitor_fd(guest._dom, out.fileno())
                    _monitor(guest._dom, "migrate", uri="fd:snapshot")
                    _wait_migration(guest._dom, 120.0)
            guest.destroy()
            if guest.console_log is not None:
                guest.console_log.unlink(missing_ok=True)
            sha, size = snapshot_mem.sha256(tmp), tmp.stat().st_size
            meta = {"key": key, "size": size, "sha256": sha, "created": time.time()}
            path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
            tmp.replace(path)
            snapshot._verified.add((str(path), size, path.stat().st_mtime_ns))
            log.info(
                "snapshot %s: %d MiB in %.1f s", path.name, size >> 20, time.monotonic() - started
            )
            return Snapshot(path, key, size, sha)
        except (OSError, libvirt.libvirtError, ValueError) as exc:
            raise SnapshotError(f"cannot build the snapshot: {exc}{_tail(guest)}") from exc
        except SnapshotError as exc:
            raise SnapshotError(f"{exc}{_tail(guest)}") from exc
        finally:
            guest.destroy()
            tmp.unlink(missing_ok=True)

    def restore(self, snap: Snapshot, name: str, token: str) -> LibvirtGuest:
        """Create a paused domain waiting for its state, load ``snap``, resume, hand over."""
        started = time.monotonic()
        key = guest_key(token, name)  # the guest's own key: it opens this guest only
        if not key or any(c.isspace() for c in key):
            raise ConfigError("token must be non-empty and contain no whitespace")
        guest, port = self.loaded(snap, name)
        self.finish(guest, port, name, key)
        guest.log.info("restored from %s in %.2fs", snap.path.name, time.monotonic() - started)
        return guest

    def loaded(
        self, snap: Snapshot, name: str, attach: bool = True, idle: Idle = None, spare: bool = False
    ) -> tuple[LibvirtGuest, Port]:
        """Domain ``name`` created paused with ``snap`` loaded, and its open identity port.

        ``attach``: start its screen session (a spare gets one when handed over);
        ``idle``: see :meth:`LibvirtBackend._start`; ``spare``: not a machine yet (on the
        bridge: the template's MAC and address until its identity gives it its own).
        """
        b = self.backend
        nic = self.template_nic() if spare else None
        guest = b._start(name, "-", mode="warm", attach=attach, idle=idle, nic=nic)
        port: Port | None = None
        try:
            # open the port first: it is then "host connected" when the saved state loads
            port = open_port(b.connection(), guest._dom, self.port(name), guest.alive)
            try:
                with snap.path.open("rb") as data:
                    _monitor_fd(guest._dom, data.fileno())
                    _monitor(guest._dom, "migrate-incoming", uri="fd:snapshot")
                    _wait_migration(guest._dom, snapshot.RESTORE_TIMEOUT)
            except (libvirt.libvirtError, SnapshotError) as exc:
                raise SnapshotLoadFailed(f"QEMU could not load {snap.path}: {exc}") from exc
            return guest, port
        except BaseException as exc:
            if port is not None:
                port.close()
            guest.destroy()
            if isinstance(exc, OSError):  # the port broke (QEMU died): boot cold
                raise SnapshotError(f"identity port of the restored guest: {exc}") from exc
            raise

    def finish(
        self, guest: LibvirtGuest, port: Port, name: str, key: str, resumed: bool = False
    ) -> None:
        """Resume a :meth:`loaded` guest (unless ``resumed``: a spare, it already runs, warmed
        up and waiting), have it run the warm-up set, hand it its identity over ``port``.

        The guest is destroyed if that fails (SnapshotError).
        """
        try:
            with port:
                try:
                    if not resumed:
                        guest._dom.resume()
                except libvirt.libvirtError as exc:
                    raise SnapshotLoadFailed(f"QEMU could not resume {name}: {exc}") from exc
                timeout = snapshot.RESTORE_TIMEOUT
                if not resumed:  # (a spare ran it when made) first set as fast as a later one
                    warm_up_guest(port, guest.alive, timeout)  # type: ignore[arg-type]
                net = self.net_identity(name)  # bridged: its reserved MAC and address
                send_identity(port, name, key, guest.alive, timeout, net)  # type: ignore[arg-type]
        except OSError as exc:  # the port broke (QEMU or the guest died): boot cold
            guest.destroy()
            raise SnapshotError(f"identity port of the restored guest: {exc}") from exc
        except BaseException:
            guest.destroy()
            raise

    def template_nic(self) -> tuple[str, ipaddress.IPv4Address] | None:
        """Bridged: the template's (MAC, IP), which restored guests have until their identity."""
        net = warm_net(self.backend)
        return None if net is None else (TEMPLATE_MAC, net.template_address.ip)

    def net_identity(self, name: str) -> dict[str, str] | None:
        """Bridged: the ``net`` entry of machine ``name``'s identity (its reservation)."""
        net = warm_net(self.backend)
        if net is None:
            return None
        mac, ip = self.backend._reservation(name)
        return net.identity(TapNic("", mac, ip))

    def close(self) -> None:
        """Destroy the spare domain (and wait for one being made)."""
        self.spares.close()

    def port(self, name: str) -> Path | None:
        """Guest ``name``'s local identity socket; None: it is reached as a channel stream."""
        b = self.backend
        if b.identity_stream:
            return None
        directory = identity.identity_dir(b.profile, b.config.state_dir, name, b.local)
        return None if directory is None else directory / "identity.sock"


def _monitor(dom: libvirt.virDomain, command: str, **arguments: Any) -> Any:
    """Run a QMP command in the domain's QEMU through libvirt; its ``return`` value."""
    reply = libvirt_qemu.qemuMonitorCommand(
        dom, json.dumps({"execute": command, "arguments": arguments}), 0
    )
    answer = json.loads(reply)
    if "error" in answer:
        raise SnapshotError(f"QEMU refused {command}: {answer['error'].get('desc', answer)}")
    return answer.get("return")


def _monitor_fd(dom: libvirt.virDomain, fd: int) -> None:
    """Hand QEMU the open file ``fd`` as ``snapshot`` (QEMU reads/writes it itself)."""
    command = {"execute": "getfd", "arguments": {"fdname": "snapshot"}}
    reply, _ = libvirt_qemu.qemuMonitorCommandWithFiles(dom, json.dumps(command), [fd], 0)
    if "error" in json.loads(reply):
        raise SnapshotError(f"QEMU refused the snapshot file: {reply}")


def _wait_migration(dom: libvirt.virDomain, timeout: float) -> None:
    """Poll ``query-migrate`` until it completes (SnapshotError if it fails or times out)."""
    deadline = time.monotonic() + timeout
    while True:
        status = _monitor(dom, "query-migrate") or {}
        state = status.get("status")
        if state == "completed":
            return
        if state in ("failed", "cancelled"):
            raise SnapshotError(f"migration {state}: {status.get('error-desc', status)}")
        if time.monotonic() >= deadline:
            raise SnapshotError(f"migration not done within {timeout:g} s ({state})")
        time.sleep(_POLL)


def _tail(guest: LibvirtGuest) -> str:
    """The end of ``guest``'s console log, for an error message."""
    console = guest.console_log
    if console is None or not console.exists():
        return ""
    return "\nconsole:\n" + console.read_text(errors="replace")[-1500:]
