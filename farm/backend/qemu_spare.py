"""A spare for qemu warm starts: one guest restored ahead and warmed up, for the next spawn.

Why: under TCG a restored guest's first task set cost ~110 ms more than a later
one. The template runs a warm-up set before it is saved (:mod:`farm.agent.warmup`),
but QEMU's translation cache is host-side and starts empty in every new QEMU:
measured with ``info jit``, a restored guest's first set made ~16,000 new
translation blocks (~9 MB of host code), the second ~1,500, the third ~30, and
perf showed the first set's QEMU time dominated by the translator
(``tcg_gen_code``, ``tcg_optimize``, ...). So every restored guest runs the
warm-up set again in its new QEMU before it gets its identity (farm measures
the task set, not itself: a first set slowed by translation is a wrong result).
A plain restore pays that in spawn -> session (~0.2-0.4 s under TCG);
:class:`QemuSpares` pays it ahead, from idle CPU: ONE guest per
backend restored from the snapshot AND resumed, whose /init is asked (the
line ``{"warm_up": true}`` on the identity port) to run the warm-up set again,
in this QEMU, and then waits for its identity. A spawn takes it and only writes
the identity (name, own key: never on a command line); a daemon thread makes
the next spare once no spawn came for QUIET (1 s), so that the new guest's
first sets do not compete with the making. A spawn that comes within that
second restores and warms up itself; one that finds the spare being made waits
for it: what is left of its making is less than a restore of its own, and a
second restore would compete with it for the CPU. (That bookkeeping, shared
with the libvirt spare, is :class:`farm.backend.spare_pool.SparePool`.)

Bridged network: the spare runs on a tap of its own (``farm-tapsPIDx``,
:mod:`farm.backend.spare_tap`) with the template's MAC and address; the
hand-over renames the tap to the machine's (``farm-tapN``) and the identity
line carries the machine's reserved MAC, IP and gateway (the ``net`` entry,
set by /init as for a plain bridged restore,
:mod:`farm.backend.snapshot_net`). QEMU's ``-device ... mac=`` stays the
template's: a guest that reset its NIC would come back with it.

Naming: the spare is ``farm-spare-<n>`` (the machine it will become is not
known). At hand-over its screen session is renamed to the machine's
(``screen -xr qemuN``), its console log moved to ``log/<machine>.console.log``
(screen logs on to the new name) and its QEMU and screen are recorded under the
machine's name. QEMU's ``-name`` and its run directory keep the spare's name.

Priority: a spare is made from idle CPU only (farm measures the task set, not
itself): its QEMU runs SCHED_IDLE from its first instruction (``chrt --idle 0``
in front of its command line). The maker thread does not: a thread of farm's
process starved while holding the GIL would stall farm's other threads. A
spawn that starts waiting for the spare, and the hand-over, lift the spare's
QEMU (every thread) to SCHED_OTHER: a spare that is wanted is not starved
(lifted as soon as its pidfile names it, while it is still being launched; a
spare launched while a spawn waits is launched without ``chrt``).

Cleanup: the spare's QEMU and screen are in the process registry from their
launch (the watchdog or the next farm reaps them when farm dies) and
:meth:`QemuSpares.close` (the backend's ``close()``) destroys the spare and
removes its tap (a dead farm's spare tap goes when the next spare's tap is made,
or with ``farm net down``, as every ``farm-tap*``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from farm.backend import identity_port, snapshot, spare_tap
from farm.backend.identity_port import Spare
from farm.backend.screen import wipe_dead
from farm.backend.spare_pool import MAX_FAILURES as MAX_FAILURES
from farm.backend.spare_pool import SparePool, can_leave_idle, set_policy
from farm.bridge.bridge import TapNic, tap_name
from farm.bridge.dhcp import machine_id
from farm.errors import BackendError, NetworkError

if TYPE_CHECKING:
    from farm.backend.qemu import QemuBackend, QemuGuest

log = logging.getLogger("farm.backend.qemu")
WAIT = 120.0  # s the making of a spare may take (from idle CPU), close() waits for it
TAKE_WAIT = 30.0  # s a spawn waits for the spare being made (lifted), then restores
QUIET = 1.0  # s without a spawn before a spare is made: a new guest's first sets run undisturbed


class QemuSpares(SparePool["QemuGuest", socket.socket]):
    """The spare guest of one :class:`QemuBackend` (at most one, made in a thread)."""

    logger = log
    KIND = "guest"
    THREAD = "qemu-spare"
    TAKE_WAIT = TAKE_WAIT
    WAIT = WAIT
    MAKE_ERRORS = (snapshot.SnapshotError, BackendError, NetworkError, OSError)
    #: (a screen command that timed out: the spawn restores instead of failing its boot)
    HAND_OVER_ERRORS = (snapshot.SnapshotError, NetworkError, OSError, subprocess.SubprocessError)

    def __init__(self, backend: QemuBackend) -> None:
        super().__init__()
        self.backend = backend
        self._past_quiet = False  # the maker's quiet wait is over: it makes the spare now
        self._spawns = 0  # take() calls: each one restarts the maker's quiet wait
        self._making: QemuGuest | None = None  # the spare's guest once launched
        self._pidfile: Path | None = None  # the spare's QEMU pidfile while it is launched

    def _taking(self) -> bool:
        """Restart the maker's quiet wait; a spawn before its end restores (nothing made
        yet: restoring is faster than quiet + making). From refill() on: a maker thread
        not yet in its quiet wait is in it for this purpose."""
        self._spawns += 1
        self._cond.notify_all()  # a maker in its quiet wait starts it again
        return self._maker is None or self._past_quiet

    def _being_made(self) -> QemuGuest | None:
        return self._making

    def _made(self) -> None:
        self._making, self._pidfile, self._past_quiet = None, None, False

    def _build(self, snap: snapshot.Snapshot, name: str) -> Spare[QemuGuest, socket.socket] | None:
        """Wait for quiet, then make the spare (None: closed meanwhile)."""
        if not self._wait_quiet():
            return None
        return self._warmed(snap, name)

    def _wait_quiet(self) -> bool:
        """Wait until no spawn came for QUIET s (False: closed meanwhile).

        A spare made right after a spawn would compete with the new guest's first sets (its
        restore's page faults and file reads, the maker's identity and QMP work in farm's
        process); spawns meanwhile restore their own."""
        with self._cond:
            seen, deadline = self._spawns, time.monotonic() + QUIET
            while not self._closed:
                left = deadline - time.monotonic()
                if self._spawns != seen:
                    seen, deadline = self._spawns, time.monotonic() + QUIET
                elif left <= 0:
                    self._past_quiet = True
                    return True
                else:
                    self._cond.wait(left)
            return False

    def _lift(self) -> bool:
        """SCHED_OTHER for the spare's QEMU being made (a spawn waits for it; lock held);
        False: it has no pid yet (its pidfile is read while it is launched)."""
        pid = None if self._making is None else self._making.pid
        if pid is None and self._pidfile is not None:
            with contextlib.suppress(OSError, ValueError):
                pid = int(self._pidfile.read_text())
        if pid is None:
            return False
        set_policy(pid, os.SCHED_OTHER, threads=True)
        return True

    def _warmed(self, snap: snapshot.Snapshot, name: str) -> Spare[QemuGuest, socket.socket]:
        """Restore guest ``name`` from ``snap``, resume it, have it run the warm-up set."""
        with self._cond:
            if self._closed:  # closed after the quiet wait: launch nothing (no tap, no net)
                raise BackendError(f"spare {name}: the backend closed")
            wanted = self._waiter  # a spawn waits already: not from idle CPU
            self._pidfile = self.backend.config.state_dir / "qemu" / name / "qemu.pid"
            self._pidfile.unlink(missing_ok=True)  # an old farm's: QEMU writes it anew
        lowered = not wanted and can_leave_idle()  # (else it would stay SCHED_IDLE)
        idle = ("chrt", "--idle", "0") if shutil.which("chrt") and lowered else ()
        net = self.backend._warm_net()
        tap = None if net is None else spare_tap.spare_nic(net)
        try:
            spawned = self.backend._spawn(name, "", warm=snap, prefix=idle, tap=tap)
        except BaseException:
            if tap is not None:
                tap.release()
            raise
        guest = cast("QemuGuest", spawned)
        with self._cond:
            if lowered and not idle and not self._waiter and guest.pid is not None:  # no chrt
                set_policy(guest.pid, os.SCHED_IDLE, threads=True)
            self._making, self._pidfile = guest, None
            if self._waiter:  # came while QEMU was launched
                self._lift()
            closed = self._closed
        if closed:
            guest.destroy()
            raise BackendError(f"spare {name}: the backend closed")
        ident = None
        try:
            ident = identity_port.connect(guest.run_dir / "identity.sock", guest.alive, 10.0)
            snapshot.resume(snap, guest.run_dir, WAIT, guest.process.qmp)
            identity_port.warm_up_guest(ident, guest.alive, WAIT)
        except BaseException:
            if ident is not None:
                ident.close()
            guest.destroy()
            if guest.console_log is not None:
                guest.console_log.unlink(missing_ok=True)
            raise
        log.info("spare guest %s restored and warmed up", name)
        return Spare(guest, ident, snap.path)

    def _hand_over(self, spare: Spare[QemuGuest, socket.socket], name: str, key: str) -> QemuGuest:
        """Make ``spare`` machine ``name`` (screen, console log, registry, [tap]), give its
        identity (its own ``key``); the spare is destroyed if that fails (e.g. a bridged
        machine name without an id: no stray spare)."""
        try:
            return self._become(spare, name, key)
        except BaseException:
            spare.discard()
            raise

    def _become(self, spare: Spare[QemuGuest, socket.socket], name: str, key: str) -> QemuGuest:
        """The hand-over (:meth:`_hand_over`)."""
        b, old = self.backend, spare.guest
        proc = old.process
        net, nic, host, on_destroy = None, old.nic, old.host, old._on_destroy
        if nic is not None:  # bridged: the machine's tap name, reserved MAC and IP
            net = b._warm_net()
            mac, ip = b._net.network().reservation(name)
            tap = tap_name(machine_id(name))
            spare_tap.rename_tap(nic.tap, tap)
            nic = TapNic(tap, mac, ip)
            host, on_destroy = str(ip), nic.release
            old._on_destroy = on_destroy  # a discard removes the renamed tap, not the next spare's
        if proc.pid is not None:
            set_policy(proc.pid, os.SCHED_OTHER, threads=True)  # a guest like any other
        if proc.screen_pid is not None:
            set_policy(proc.screen_pid, os.SCHED_OTHER)
        console = old._console
        if proc.screen_pid is not None:
            target = (b.config.log_dir / f"{name}.console.log").resolve()
            os.replace(console, target)
            wipe_dead(name)  # a dead qemuN socket would make `screen -xr qemuN` ambiguous
            subprocess.run(
                ["screen", "-S", f"{proc.screen_pid}.{old.name}", "-X", "eval",
                 f"logfile {target}", "log off", "log on", f"sessionname {name}"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=5, check=False,
            )  # fmt: skip
            console.unlink(missing_ok=True)  # if screen wrote to the old name meanwhile
            console = proc.log_file = target
        if proc.pid is not None:
            b.registry.record(name, proc.pid, "qemu")
        if proc.screen_pid is not None:
            b.registry.record(f"{name}.screen", proc.screen_pid, "screen")
        b.registry.forget(old.name)
        b.registry.forget(f"{old.name}.screen")
        proc.name = name
        guest = type(old)(name, old.port, proc, old.run_dir, console, host, on_destroy, nic)
        ident = None if net is None or nic is None else net.identity(nic)
        try:
            identity_port.send_identity(
                spare.port, name, key, guest.alive, snapshot.RESTORE_TIMEOUT, ident
            )
        except BaseException:
            guest.destroy()
            raise
        finally:
            spare.port.close()
        guest.log.info("warm start from spare guest %s", old.name)
        return guest
