"""``qemu`` backend: a plain QEMU process inside ``screen -dmS qemuN`` (seed 004's way).

Managed by PID with psutil, never ``ps | grep``: QEMU writes a pidfile, is
asked to quit over QMP, then SIGTERM, then SIGKILL. The serial console is the
screen window (``screen -xr qemuN`` to attach) and screen logs it to
``log/qemuN.console.log``. Both PIDs are recorded so a watchdog reaps them if
farm dies.

With ``warm_start`` (config ``warm_start``, or the constructor argument) a
guest is not booted but restored from a saved template guest and handed its
own name and token (see :mod:`farm.backend.snapshot`); if the snapshot cannot
be made or restored, the guest boots cold instead (logged).
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil

from farm.backend import snapshot
from farm.backend.base import Backend, Guest
from farm.bridge.bridge import BackendBridge
from farm.config import FarmConfig
from farm.errors import BackendError, ConfigError, ImageError
from farm.procs import ProcessRegistry, terminate
from farm.profile import MachineProfile, load_profile

log = logging.getLogger(__name__)

_SCREENRC = "logfile flush 1\nlogtstamp off\nstartup_message off\n"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (QEMU binds it for hostfwd)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def qmp_quit(path: Path, timeout: float = 2.0) -> bool:
    """Ask QEMU to quit over its QMP socket; False if that was not possible."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            reader = sock.makefile("rb")
            reader.readline()  # greeting
            sock.sendall(b'{"execute": "qmp_capabilities"}\n')
            reader.readline()
            sock.sendall(b'{"execute": "quit"}\n')
            reader.readline()
        return True
    except (OSError, ValueError):
        return False


class QemuGuest(Guest):
    """A QEMU process running in a screen session."""

    def __init__(
        self,
        name: str,
        port: int,
        qemu_pid: int,
        screen_pid: int | None,
        run_dir: Path,
        console: Path,
        registry: ProcessRegistry,
        host: str = "127.0.0.1",
        on_destroy: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.host = host  # bridged: the guest's reserved IP; user mode: loopback (hostfwd)
        self._on_destroy = on_destroy  # bridged: removes the guest's tap
        self.port = port
        self._pid = qemu_pid
        self._screen_pid = screen_pid
        self._run_dir = run_dir
        self._console = console
        self._registry = registry
        self.run_dir = run_dir
        self._lock = threading.Lock()
        self._destroyed = False
        self.log = log.getChild(name)

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def console_log(self) -> Path | None:
        return self._console

    def address(self, timeout: float) -> tuple[str, int]:
        return self.host, self.port

    def alive(self) -> bool:
        try:
            return psutil.Process(self._pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def destroy(self) -> None:
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = True
        try:
            if self.alive() and qmp_quit(self._run_dir / "qmp.sock"):
                try:
                    psutil.Process(self._pid).wait(3.0)
                except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                    pass
            terminate(self._pid, timeout=3.0)
            if self._screen_pid is not None:
                terminate(self._screen_pid, timeout=3.0)
        finally:
            self._registry.forget(self.name)
            self._registry.forget(f"{self.name}.screen")
            shutil.rmtree(self._run_dir, ignore_errors=True)
            if self._on_destroy is not None:
                self._on_destroy()
            self.log.debug("destroyed")


class QemuBackend(Backend):
    """Starts guests as ``screen -dmS NAME qemu-system-... `` processes."""

    kind = "qemu"

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
        #: restore guests from a snapshot (None: config ``warm_start``, default off)
        self.warm_start = bool(
            getattr(config, "warm_start", False) if warm_start is None else warm_start
        )
        if self.warm_start:
            snapshot.check_profile(self.profile, config.network)
        self._wprofile = replace(self.profile, guest_port=config.agent_port)
        self._warm_off = ""  # why warm start was given up in this backend ("" = not)
        self._warm_lock = threading.Lock()
        self.registry = ProcessRegistry(config.state_dir)
        self._net = BackendBridge(config, self.registry)  # network == "bridge": br0 + dhcpd

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
        if self.warm_start and not self._warm_off:
            snap = self._snapshot()
            if snap is not None:
                try:
                    return self._restore(name, token, snap)
                except snapshot.SnapshotError as exc:
                    log.warning("%s: warm start failed, booting cold: %s", name, exc)
                    if isinstance(exc, snapshot.SnapshotLoadFailed):  # the next spawn rebuilds it
                        snapshot.discard(snap.path)
        return self._spawn(name, token)

    def _snapshot(self) -> snapshot.Snapshot | None:
        """The current snapshot (built on first use); None after a failure (cold boots)."""
        try:
            return snapshot.ensure(
                self._wprofile, self.config.state_dir, self.registry, self.config.boot_timeout
            )
        except snapshot.SnapshotCorrupt as exc:
            log.warning("%s; this guest boots cold, the next one rebuilds it", exc)
            return None
        except snapshot.SnapshotError as exc:
            with self._warm_lock:
                if not self._warm_off:
                    log.warning("warm start off, guests boot cold: %s", exc)
                self._warm_off = str(exc)
            return None

    def _restore(self, name: str, token: str, snap: snapshot.Snapshot) -> Guest:
        """Start QEMU with ``-incoming defer``, load the snapshot, hand over name and token."""
        started = time.monotonic()
        guest = self._spawn(name, token, warm=True)
        assert isinstance(guest, QemuGuest)
        try:
            snapshot.restore(snap, guest.run_dir, name, token, guest.alive)
        except BaseException:
            guest.destroy()
            raise
        guest.log.info("restored from %s in %.2fs", snap.path.name, time.monotonic() - started)
        return guest

    def _spawn(self, name: str, token: str, warm: bool = False) -> Guest:
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
        if self.config.network == "bridge":  # a tap on br0; the agent at the reserved IP
            nic = self._net.network().attach(name)
            host, port, on_destroy = str(nic.ip), self.config.agent_port, nic.release
            if self.profile.nic:
                extra += nic.qemu_args(self.profile.nic, self.profile.nic_onboard)
            profile = replace(self.profile, nic="")  # the NIC comes from ``extra``
        if warm:  # the template's command line (same guest port) + identity port + -incoming
            argv = snapshot.guest_argv(
                self._wprofile, name, run_dir, hostfwd_port=port, extra=extra
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
        (run_dir / "screenrc").write_text(_SCREENRC)
        (run_dir / "cmdline").write_text(json.dumps(argv))
        cmd = [
            "screen",
            "-dmS",
            name,
            "-c",
            str(run_dir / "screenrc"),
            "-L",
            "-Logfile",
            str(console),
            *argv,
        ]
        glog.info("starting %s", " ".join(argv))
        try:
            subprocess.run(
                cmd, check=True, timeout=10, stdin=subprocess.DEVNULL, capture_output=True
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise BackendError(f"{name}: cannot start screen/QEMU: {exc}") from exc
        qemu_pid = self._wait_pid(name, pidfile, console, argv)
        screen_pid = _parent(qemu_pid)
        self.registry.record(name, qemu_pid, "qemu")
        if screen_pid is not None:
            self.registry.record(f"{name}.screen", screen_pid, "screen")
        glog.info("QEMU pid %d in screen %s, agent on %s:%d", qemu_pid, name, host, port)
        return QemuGuest(
            name, port, qemu_pid, screen_pid, run_dir, console, self.registry, host, on_destroy
        )

    def close(self) -> None:
        """Take the bridged network down if this backend brought it up."""
        self._net.close()

    def _wait_pid(self, name: str, pidfile: Path, console: Path, argv: list[str]) -> int:
        deadline = time.monotonic() + 10.0
        delay = 0.005
        while time.monotonic() < deadline:
            try:
                pid = int(pidfile.read_text().strip())
                if psutil.pid_exists(pid):
                    return pid
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        _end_screens_using(pidfile.parent / "screenrc")  # ours only, never a same-named one
        output = console.read_text(errors="replace")[-2000:] if console.exists() else ""
        raise BackendError(
            f"{name}: QEMU did not start within 10s.\ncommand: {' '.join(argv)}\noutput:\n{output}"
        )

    def reap_stale(self) -> list[str]:
        return self.registry.reap_stale()


def _end_screens_using(screenrc: Path) -> None:
    """Terminate the screen sessions started with this guest's own screenrc."""
    marker = str(screenrc)
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if "screen" in (proc.info["name"] or "").lower() and marker in (
                proc.info["cmdline"] or []
            ):
                terminate(proc.pid, timeout=2.0)
        except psutil.Error:
            pass


def _parent(pid: int) -> int | None:
    try:
        parent = psutil.Process(pid).parent()
    except psutil.NoSuchProcess:
        return None
    if parent is None or "screen" not in parent.name().lower():
        return None
    return parent.pid
