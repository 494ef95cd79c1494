"""A spare for libvirt warm starts: one domain made ahead, handed to the next spawn.

Why: on libvirt 9.0 a restore costs the domain's creation (``createXML``:
libvirt probes the x86 guest CPU with ~400 ``qom-get`` monitor round trips,
which no setting skips) plus the snapshot's load, 0.5-0.9 s of a ~0.65 s warm
spawn. So :class:`Spares` keeps ONE domain per backend (one template) created
paused with the snapshot already loaded and its identity port open, then
resumed and asked to run the warm-up set again in its own QEMU (whose
translation cache starts empty): its guest then waits idle for its identity
(a blocking read; ~0.4 % of a core under TCG, at SCHED_IDLE), so a spawn
that takes it only writes the guest's identity (name, own key) and waits for
the ack (a libvirt resume cost 15-40 ms of the spawn); a daemon thread makes
the next spare. A spawn that finds a spare being made waits for it (it would
cost as much to make another); a spawn that finds none (several at once)
restores as before, and warms its guest up itself. (That bookkeeping, shared
with the qemu spare, is :class:`farm.backend.spare_pool.SparePool`.)

Naming: a running domain cannot be renamed and the machine a spare will
become is not known (the pool respawns ``qemuN`` right after destroying the
dead ``qemuN``, so a spare named after it could not exist yet). So a spare's
domain is ``farm-spare-<n>`` (prefixed with the farm id on a shared daemon,
like every farm domain) and at hand-over farm gives it the machine's domain
title (``virsh list --title``), renames its console log to
``log/<machine>.console.log`` (QEMU keeps writing the same file), starts the
``screen -xr <machine>`` session and records its QEMU under the machine's
name. Title and screen come after the identity's ack, in a thread
(:meth:`LibvirtGuest.screen_later`; ``destroy()`` waits for it): starting
screen (``screen -wipe``, fork, its socket) cost ~10 ms of the spawn. Only
``virsh console`` on a shared daemon needs the domain name (the title says
which machine it is); farm itself always goes by the guest object. On farm's
bridge a spare's interface has the template's MAC and its guest the template's
address until its identity gives it the machine's reserved ones
(:mod:`farm.backend.snapshot_net`); the domain XML keeps the template's MAC.

Priority: a spare is made from idle CPU only, so that it never competes with the
guests' task sets (farm measures the task set, not itself): its maker thread runs
SCHED_IDLE inside libvirt's ``createXML`` (a C call without the GIL; elsewhere a
starved thread holding the GIL would stall the spawn's session), and the QEMU
libvirt forks from that thread (the embedded driver) inherits it. A spawn
that has to wait for the spare lifts the maker and the spare's QEMU to
SCHED_OTHER, and so does the hand-over, before the guest gets its identity.

Cleanup: a spare's QEMU is in the process registry under its own name from
its creation (the watchdog reaps it when farm dies), a daemon URI destroys it
with farm's connection (AUTODESTROY, as every guest), and
:meth:`Spares.close` (the backend's ``close()``) destroys it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import libvirt
import psutil

from farm.agent.protocol import guest_key
from farm.backend import libvirt_host, naming
from farm.backend.identity_port import SnapshotError, Spare, warm_up_guest
from farm.backend.libvirt_guest import LibvirtGuest
from farm.backend.snapshot import Snapshot
from farm.backend.spare_pool import MAX_FAILURES as MAX_FAILURES
from farm.backend.spare_pool import SparePool, can_leave_idle, set_policy
from farm.errors import BackendError

if TYPE_CHECKING:
    from farm.backend.libvirt_snapshot import LibvirtWarm, Port

log = logging.getLogger("farm.backend.libvirt")
WAIT = 60.0  # s a spawn waits for the spare being made, close() for its maker


class Spares(SparePool[LibvirtGuest, "Port"]):
    """The spare domain of one :class:`LibvirtWarm` (at most one, made in a thread)."""

    logger = log
    KIND = "domain"
    THREAD = "libvirt-spare"
    TAKE_WAIT = WAIT
    WAIT = WAIT
    MAKE_ERRORS = (SnapshotError, BackendError, OSError, libvirt.libvirtError)
    HAND_OVER_ERRORS = (SnapshotError,)

    def __init__(self, warm: LibvirtWarm) -> None:
        super().__init__()
        self.warm = warm
        self._maker_tid = 0  # the maker thread's native id while it runs
        self._making = ""  # the domain name being made

    def _lift(self) -> bool:
        """SCHED_OTHER for the maker thread and the QEMU of the domain being made (if it runs
        yet: one it forks later inherits the maker's policy). Made from idle CPU: now it is
        wanted."""
        if self._maker_tid:
            set_policy(self._maker_tid, os.SCHED_OTHER)
        if not self._making:
            return True
        wanted = f"guest={self._making},"
        for proc in psutil.process_iter(["name", "cmdline"]):
            args = proc.info["cmdline"] or []
            name = proc.info["name"] or ""
            if name.startswith("qemu") and any(a.startswith(wanted) for a in args):
                set_policy(proc.pid, os.SCHED_OTHER, threads=True)
        return True

    def _made(self) -> None:
        self._maker_tid, self._making = 0, ""

    def _build(self, snap: Snapshot, name: str) -> Spare[LibvirtGuest, Port]:
        """Make the spare: loaded paused, resumed, warmed up, waiting for its identity."""
        with self._cond:
            self._maker_tid, self._making = threading.get_native_id(), name
        guest, port = self.warm.loaded(snap, name, attach=False, idle=self._idle, spare=True)
        try:  # running, it waits for its identity idle: a spawn need not resume it
            guest._dom.resume()
            # the warm-up set again, in this QEMU: the machine's first set is then
            # as fast as a later one (farm.backend.identity_port.warm_up_guest)
            warm_up_guest(port, guest.alive, WAIT)  # type: ignore[arg-type]
        except BaseException:
            Spare(guest, port, snap.path).discard()
            raise
        spare = Spare(guest, port, snap.path)
        self._forget_port_dir(name)
        return spare

    @contextlib.contextmanager
    def _idle(self) -> Iterator[None]:
        """SCHED_IDLE for the maker thread inside (libvirt's ``createXML``: the QEMU it
        forks inherits it), unless a spawn waits. Only around that C call, which releases
        the GIL: a SCHED_IDLE thread holding the GIL would stall farm's other threads
        (the spawn's session) until a CPU is idle."""
        with self._cond:
            idle = not self._waiter and can_leave_idle()  # (else it would stay SCHED_IDLE)
            if idle:
                set_policy(0, os.SCHED_IDLE)
        try:
            yield
        finally:
            if idle:
                set_policy(0, os.SCHED_OTHER)

    def _forget_port_dir(self, name: str) -> None:
        """Remove the spare's identity socket dir (connected: the path is no longer used)."""
        sock = self.warm.port(name)
        if sock is not None:
            shutil.rmtree(sock.parent, ignore_errors=True)

    def _hand_over(self, spare: Spare[LibvirtGuest, Port], name: str, token: str) -> LibvirtGuest:
        """Make ``spare`` machine ``name`` (title, console log, screen, registry), resume it."""
        b, old = self.warm.backend, spare.guest
        glog = log.getChild(name)
        key = guest_key(token, name)
        try:
            address = old.address(0.0)
            if b.bridged:  # its identity gives it the machine's reserved MAC and address
                address = (str(b._reservation(name)[1]), b.config.agent_port)
            console = old.console_log
            if console is not None:
                target = (b.config.log_dir / f"{name}.console.log").resolve()
                os.replace(console, target)  # QEMU keeps writing to the same file
                console = target
            if old.pid is not None:
                b.registry.record(name, old.pid, "libvirt-qemu", uuid=old.uuid)
            b.registry.forget(old.name)
        except BaseException:
            spare.discard()
            b.registry.forget(name)
            raise
        if old.pid is not None:
            set_policy(old.pid, os.SCHED_OTHER, threads=True)  # a guest like any other
        guest = LibvirtGuest(
            name,
            old._dom,
            address,
            b.registry,
            qemu=old._qemu,
            console=console,
            hostfwd=not b.bridged,
        )
        self.warm.finish(guest, spare.port, name, key, resumed=True)
        guest.screen_later(lambda: self._dress(guest, old._dom))  # not waited for
        glog.info("warm start from spare domain %s", old._dom.name())
        return guest

    def _dress(self, guest: LibvirtGuest, dom: libvirt.virDomain) -> subprocess.Popen[bytes] | None:
        """The rest of a hand-over, after the guest has its identity: the domain's title
        (``virsh list --title``) and the ``screen -xr <machine>`` session (returned)."""
        b = self.warm.backend
        title = naming.domain_title(b.config.state_dir, guest.name, os.getpid())
        with contextlib.suppress(libvirt.libvirtError):
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_TITLE, title, None, None, flags)
        if not b.local or b.console_stream:
            return None
        return libvirt_host.start_screen(dom, guest.name, b.registry, guest.log)
