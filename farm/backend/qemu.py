"""``qemu`` backend: a plain QEMU process inside ``screen -dmS qemuN`` (seed 004's way).

Managed by PID with psutil, never ``ps | grep``: QEMU writes a pidfile, is
asked to quit over QMP, then SIGTERM, then SIGKILL. The serial console is the
screen window (``screen -xr qemuN`` to attach) and screen logs it to
``log/qemuN.console.log``. Both PIDs are recorded so a watchdog reaps them if
farm dies.

With ``warm_start`` (config ``warm_start``, or the constructor argument) a
guest is not booted but restored from a saved template guest and handed its
own name and token (see :mod:`farm.backend.snapshot`); if the snapshot cannot
be made or restored, the guest boots cold instead (logged). Restored guests map
the template's RAM copy-on-write (:mod:`farm.backend.snapshot_mem`); on the
bridged network each takes its own reserved MAC and IP
(:mod:`farm.backend.snapshot_net`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil

from farm.agent.protocol import guest_key
from farm.backend import identity, snapshot, snapshot_mem
from farm.backend.base import Backend, Guest, pid_stopped
from farm.backend.qemu_spare import QemuSpares
from farm.backend.screen import wipe_dead
from farm.backend.snapshot_net import WarmNet
from farm.bridge.bridge import BackendBridge, TapNic, plan_for
from farm.config import FarmConfig
from farm.errors import ConfigError, ImageError, LaunchError, NetworkError
from farm.procs import ProcessRegistry
from farm.profile import MachineProfile, load_profile
from farm.qemu import QemuProcess, Screen, free_port

log = logging.getLogger(__name__)


class QemuGuest(Guest):
    """A QEMU process running in a screen session."""

    def __init__(
        self,
        name: str,
        port: int,
        process: QemuProcess,
        run_dir: Path,
        console: Path,
        host: str = "127.0.0.1",
        on_destroy: Callable[[], None] | None = None,
        nic: TapNic | None = None,
    ) -> None:
        self.name = name
        self.nic = nic  # bridged: the guest's tap, MAC and reserved IP
        self.host = host  # bridged: the guest's reserved IP; user mode: loopback (hostfwd)
        self._on_destroy = on_destroy  # bridged: removes the guest's tap
        self.port = port
        self.process = process
        self._console = console
        self.run_dir = run_dir
        self.log = log.getChild(name)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def console_log(self) -> Path | None:
        return self._console

    def address(self, timeout: float) -> tuple[str, int]:
        return self.host, self.port

    def alive(self) -> bool:
        """False once QEMU died or is stopped (SIGSTOP): a frozen guest counts as hung."""
        return self.process.alive() and not pid_stopped(self.pid)

    def destroy(self) -> None:
        if not self._first_destroy():
            return
        try:
            # a stopped QEMU answers no QMP quit and holds SIGTERM: kill it (and a
            # stopped screen) at once instead of waiting out every soft step
            hard = _kill_if_stopped(self.pid)
            self.process.shutdown(timeout=3.0, hard=hard)
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            wipe_dead(self.name)  # a screen killed hard leaves its socket behind
            if self._on_destroy is not None:
                self._on_destroy()
            self.log.debug("destroyed")


def _kill_if_stopped(pid: int | None) -> bool:
    """SIGKILL QEMU and its screen if either is stopped; True if QEMU was."""
    if pid is None or not pid_stopped(pid):
        return False
    try:
        qemu = psutil.Process(pid)
        parent = qemu.parent()
        qemu.kill()
        if parent is not None and "screen" in parent.name().lower() and pid_stopped(parent.pid):
            parent.kill()
    except psutil.Error:
        pass
    return True


class QemuBackend(Backend):
    """Starts guests as ``screen -dmS NAME qemu-system-... `` processes."""

    kind = "qemu"
    #: warm start: restored guests map the template's RAM file copy-on-write (snapshot_mem)
    shared_ram = True

    def __init__(
        self,
        config: FarmConfig,
        profile: MachineProfile | None = None,
        warm_start: bool | None = None,
    ) -> None:
        self.config = config
        self.profile = (
            profile if profile is not None else load_profile(config.profile, config.image_dir)
        )
        #: restore guests from a snapshot (None: config ``warm_start``, default on)
        self.warm_start = bool(
            getattr(config, "warm_start", True) if warm_start is None else warm_start
        )
        try:
            if self.warm_start:
                snapshot.check_profile(self.profile, config.network, bridged=True)
        except ConfigError as exc:
            if warm_start:  # asked for by the caller, not just the default
                raise
            log.info("warm start off, guests boot cold: %s", exc)
            self.warm_start = False
        self._wprofile = replace(self.profile, guest_port=config.agent_port)
        self._warm_off = ""  # why warm start was given up in this backend ("" = not)
        self._warm_lock = threading.Lock()
        self.registry = ProcessRegistry(config.state_dir)
        self._net = BackendBridge(config, self.registry)  # network == "bridge": br0 + dhcpd
        self.spares = QemuSpares(self)  # one guest restored and warmed up ahead

    def check(self) -> None:
        if shutil.which(self.profile.qemu) is None:
            raise ConfigError(f"QEMU binary {self.profile.qemu!r} not found (install qemu-system)")
        if shutil.which("screen") is None:
            raise ConfigError("screen is not installed (apt-get install screen)")
        for label, path in (("kernel", self.profile.kernel), ("initrd", self.profile.initrd)):
            if path is not None and not Path(path).is_file():
                raise ImageError(f"missing guest {label} {path}: run `farm image build`")
        if self.config.network == "bridge":
            from farm.bridge.bridge import check_bridge_support

            check_bridge_support(self.config)

    def spawn(self, name: str, token: str) -> Guest:
        token = guest_key(token, name)  # the guest's own key: it opens this guest only
        if self.warm_start and not self._warm_off:
            snap = self._snapshot()
            if snap is not None:
                try:
                    guest = self.spares.take(snap, name, token) or self._restore(name, token, snap)
                except snapshot.SnapshotError as exc:
                    log.warning("%s: warm start failed, booting cold: %s", name, exc)
                    if isinstance(exc, snapshot.SnapshotLoadFailed):  # the next spawn rebuilds it
                        snapshot.discard(snap.path)
                else:
                    self.spares.refill(snap)  # the next spawn's guest, made from idle CPU
                    return guest
        return self._spawn(name, token)

    def _snapshot(self) -> snapshot.Snapshot | None:
        """The current snapshot (built on first use); None after a failure (cold boots)."""
        try:
            return snapshot.ensure(
                self._wprofile,
                self.config.state_dir,
                self.registry,
                self.config.boot_timeout,
                net=self._warm_net(),
                ram=self.shared_ram,
            )
        except snapshot.SnapshotCorrupt as exc:
            log.warning("%s; this guest boots cold, the next one rebuilds it", exc)
            return None
        except (snapshot.SnapshotError, NetworkError) as exc:
            with self._warm_lock:
                if not self._warm_off:
                    log.warning("warm start off, guests boot cold: %s", exc)
                self._warm_off = str(exc)
            return None

    def _warm_net(self) -> WarmNet | None:
        """Bridged: the network of the template and of restored guests (brought up now)."""
        if self.config.network != "bridge":
            return None
        bridge = self._net.network().bridge
        profile = self.profile
        return WarmNet(plan_for(self.config), profile.nic_device, profile.nic_onboard, bridge)

    def _restore(self, name: str, token: str, snap: snapshot.Snapshot) -> Guest:
        """Start QEMU with ``-incoming defer``, load the snapshot, hand over name and token."""
        started = time.monotonic()
        guest = self._spawn(name, token, warm=snap)
        assert isinstance(guest, QemuGuest)
        net = self._warm_net()
        ident = None if net is None or guest.nic is None else net.identity(guest.nic)
        try:
            snapshot.restore(  # warmed up first: its first set as faithful as a later one
                snap,
                guest.run_dir,
                name,
                token,
                guest.alive,
                qmp=guest.process.qmp,
                net=ident,
                warm_up=True,
            )
        except BaseException:
            guest.destroy()
            raise
        guest.log.info("restored from %s in %.2fs", snap.path.name, time.monotonic() - started)
        return guest

    def _spawn(
        self,
        name: str,
        token: str,
        warm: snapshot.Snapshot | None = None,
        prefix: tuple[str, ...] = (),
        tap: TapNic | None = None,
    ) -> Guest:  # prefix: a command QEMU is run with (a spare's ``chrt --idle 0``)
        # tap: bridged, the NIC made already (a spare's: qemu_spare); else the machine's
        glog = log.getChild(name)
        run_dir = (self.config.state_dir / "qemu" / name).resolve()
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        console = (self.config.log_dir / f"{name}.console.log").resolve()
        console.unlink(missing_ok=True)
        pidfile = run_dir / "qemu.pid"
        port = free_port()
        host, profile, extra = "127.0.0.1", self.profile, ["-pidfile", str(pidfile)]
        on_destroy: Callable[[], None] | None = None
        nic: TapNic | None = None
        if self.config.network == "bridge":  # a tap on br0; the agent at the reserved IP
            nic = self._net.network().attach(name) if tap is None else tap
            host, port, on_destroy = str(nic.ip), self.config.agent_port, nic.release
            if self.profile.nic:
                extra += nic.qemu_args(self.profile.nic_device, self.profile.nic_onboard)
            profile = replace(self.profile, nic="")  # the NIC comes from ``extra``
        if warm is not None:  # the template's command line + identity port + -incoming
            net = self._warm_net()
            wprofile = self._wprofile if net is None else net.profile(self._wprofile)
            if warm.ram is not None:  # the template's RAM, private (copy-on-write)
                extra += snapshot_mem.ram_args(warm.ram, self._wprofile.memory, shared=False)
            argv = snapshot.guest_argv(wprofile, name, run_dir, hostfwd_port=port, extra=extra)
        elif identity.takes_identity(profile):  # cold, and the key goes over the identity port
            argv = identity.cold_profile(profile).qemu_argv(
                name,
                hostfwd_port=port if host == "127.0.0.1" else None,
                guest_port=self.config.agent_port,
                token=None,
                console="stdio",
                qmp_socket=run_dir / "qmp.sock",
                extra=[*extra, *snapshot.identity_args(run_dir / "identity.sock", profile)],
            )
        else:
            argv = profile.qemu_argv(
                name,
                hostfwd_port=port if host == "127.0.0.1" else None,
                guest_port=self.config.agent_port,
                token=token,
                console="stdio",
                qmp_socket=run_dir / "qmp.sock",
                extra=extra,
            )
        argv = [*prefix, *argv]
        (run_dir / "cmdline").write_text(json.dumps(argv))
        glog.info("starting %s", " ".join(argv))
        wipe_dead(name)  # a dead qemuN socket would make `screen -xr qemuN` ambiguous
        process = QemuProcess(
            argv,
            name=name,
            qmp_socket=run_dir / "qmp.sock",
            pidfile=pidfile,
            screen=Screen(name, run_dir / "screenrc", console),
            registry=self.registry,
        )
        try:
            with snapshot_mem.no_thp() if warm is not None else contextlib.nullcontext():
                process.launch()
        except LaunchError:
            if on_destroy is not None:
                on_destroy()
            raise
        glog.info("QEMU pid %d in screen %s, agent on %s:%d", process.pid, name, host, port)
        if warm is None and identity.takes_identity(profile):
            identity.hand_over_later(run_dir, name, token, process.alive, self.config.boot_timeout)
        return QemuGuest(name, port, process, run_dir, console, host, on_destroy, nic)

    def close(self) -> None:
        """Destroy the spare guest, take the bridged network down if this backend brought it up."""
        self.spares.close()
        self._net.close()

    def reap_stale(self) -> list[str]:
        return self.registry.reap_stale()
