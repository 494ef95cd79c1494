"""farm's one QEMU launcher, modelled on QEMU's own ``python/qemu/machine`` (QEMUMachine).

``QemuProcess(argv, ...)`` only records the configuration. :meth:`launch`
starts QEMU, directly as a child in its own session or wrapped in
``screen -dmS NAME`` (the qemu backend's console: ``screen -xr NAME``), waits
until it is up (its pidfile under screen, its QMP socket when it has one) and
on any failure rolls back everything it opened before raising
:class:`LaunchError` with the exit code, the command and the tail of the log.
:meth:`shutdown` is idempotent: soft (QMP ``quit``, or SIGTERM without QMP),
then hard (SIGKILL of QEMU's process group), and one cleanup in ``finally``.

The command line may hold the guest's token (``farm.token=``): this module
never logs it, and :func:`redact` hides it in error messages.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

from farm.errors import BackendError, LaunchError
from farm.procs import ProcessRegistry, terminate, wait_exited
from farm.qemu.qmp import QmpClient, QmpError

log = logging.getLogger(__name__)

#: how long launch() waits for the pidfile (screen) or the QMP socket
LAUNCH_TIMEOUT = 10.0
_SCREENRC = "logfile flush 1\nlogtstamp off\nstartup_message off\n"
_TOKEN = re.compile(r"(farm\.token=)\S+")


def redact(argv: Sequence[str]) -> str:
    """The command line as one string with the guest token hidden."""
    return _TOKEN.sub(r"\1***", " ".join(argv))


@dataclass(frozen=True)
class Screen:
    """Run QEMU inside ``screen -dmS session`` with its window logged to ``logfile``."""

    session: str
    screenrc: Path
    logfile: Path


class QemuProcess:
    """One QEMU process: launch, watch, shut down (see the module docstring)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str = "qemu",
        log_file: Path | None = None,
        qmp_socket: Path | None = None,
        pidfile: Path | None = None,
        screen: Screen | None = None,
        registry: ProcessRegistry | None = None,
        pipe_stdout: bool = False,
        launch_timeout: float = LAUNCH_TIMEOUT,
    ) -> None:
        if screen is not None and pidfile is None:
            raise ValueError("QEMU under screen needs a pidfile (it is not our child)")
        self.argv = list(argv)
        self.name = name
        self.log_file = log_file if screen is None else screen.logfile
        self.qmp_socket = qmp_socket
        self.pidfile = pidfile
        self.screen = screen
        self._registry = registry
        self._pipe_stdout = pipe_stdout
        self._launch_timeout = launch_timeout
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._pid: int | None = None
        self._screen_pid: int | None = None
        self._qmp: QmpClient | None = None
        self._launched = False
        self._shut = False

    # -- state ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """QEMU's pid (under screen: read from its pidfile), None before launch()."""
        return self._pid

    @property
    def screen_pid(self) -> int | None:
        return self._screen_pid

    @property
    def qmp(self) -> QmpClient | None:
        """The negotiated QMP connection (when QEMU has a QMP socket), held until shutdown."""
        return self._qmp

    @property
    def stdout(self) -> IO[bytes] | None:
        """QEMU's stdout with ``pipe_stdout`` (a direct child only)."""
        return self._popen.stdout if self._popen is not None else None

    @property
    def exitcode(self) -> int | None:
        """QEMU's exit status once it ended (known for a direct child only)."""
        return self._popen.poll() if self._popen is not None else None

    returncode = exitcode

    def poll(self) -> int | None:
        """Like ``Popen.poll``: the exit status, None while running (or unknown)."""
        return self.exitcode

    def alive(self) -> bool:
        """True while QEMU runs."""
        if self._popen is not None:
            return self._popen.poll() is None
        if self._pid is None:
            return False
        try:
            return psutil.Process(self._pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def _not_stopped(self) -> bool:
        """Alive and not stopped (SIGSTOP): a stopped QEMU never greets QMP."""
        if not self.alive():
            return False
        try:
            return self._pid is None or psutil.Process(self._pid).status() != psutil.STATUS_STOPPED
        except psutil.Error:
            return True

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for QEMU to end; its exit status (None under screen). TimeoutExpired if not."""
        if self._popen is not None:
            return self._popen.wait(timeout)
        if self._pid is None:
            return None
        try:  # exited = a zombie too: screen's parent may reap it seconds later
            proc = psutil.Process(self._pid)
        except psutil.NoSuchProcess:
            return None
        if wait_exited([proc], math.inf if timeout is None else timeout):
            raise subprocess.TimeoutExpired(self.argv, timeout or 0.0)
        return None

    def output(self, limit: int = 2000) -> str:
        """The tail of QEMU's log (stdout/stderr, or the screen window's log)."""
        if self.log_file is None:
            return ""
        try:
            with self.log_file.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # -- launch -----------------------------------------------------------------------------

    def launch(self) -> QemuProcess:
        """Start QEMU and wait until it is up; LaunchError (nothing left running) if not."""
        if self._launched:
            raise BackendError(f"{self.name}: QEMU was already launched")
        self._launched = True
        try:
            self._launch()
        except BaseException as exc:
            exitcode = self.exitcode
            self._shut = True
            self._cleanup(hard=True)
            if isinstance(exc, LaunchError):
                raise
            if not isinstance(exc, OSError | QmpError | subprocess.SubprocessError):
                raise
            why = _TOKEN.sub(r"\1***", str(exc))  # a CalledProcessError names the argv
            raise LaunchError(
                f"{self.name}: cannot start QEMU: {why}\ncommand: {redact(self.argv)}\n"
                f"output:\n{self.output()}",
                exitcode=exitcode,
                command=self.argv,
                output=self.output(),
            ) from exc
        log.debug("%s: QEMU pid %s", self.name, self._pid)
        return self

    def _launch(self) -> None:
        if self.screen is not None:
            self._launch_screen(self.screen)
        else:
            self._launch_direct()
        if self._registry is not None and self._pid is not None:
            self._registry.record(self.name, self._pid, "qemu")
            if self._screen_pid is not None:
                self._registry.record(f"{self.name}.screen", self._screen_pid, "screen")
        if self.qmp_socket is not None:
            try:
                self._qmp = QmpClient(self.qmp_socket).connect(
                    self._launch_timeout, alive=self._not_stopped
                )
            except QmpError as exc:
                raise self._failed(f"QEMU did not start ({exc})") from exc

    def _launch_direct(self) -> None:
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("wb")
        out: IO[bytes] | int = self._log if self._log is not None else subprocess.DEVNULL
        if self._pipe_stdout and self._log is None:
            out = subprocess.STDOUT  # stderr into the pipe too: the caller sees why it failed
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self._pipe_stdout else out,
            stderr=out,
            start_new_session=True,  # SIGINT at the terminal is farm's, not QEMU's
        )
        self._pid = self._popen.pid

    def _launch_screen(self, screen: Screen) -> None:
        assert self.pidfile is not None
        self.pidfile.unlink(missing_ok=True)
        screen.screenrc.write_text(_SCREENRC)
        screen.logfile.unlink(missing_ok=True)
        cmd = ["screen", "-dmS", screen.session, "-c", str(screen.screenrc), "-L", "-Logfile"]
        subprocess.run(
            [*cmd, str(screen.logfile), *self.argv],
            check=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        deadline = time.monotonic() + self._launch_timeout
        delay = 0.005
        while True:
            with contextlib.suppress(FileNotFoundError, ValueError):
                pid = int(self.pidfile.read_text().strip())
                if psutil.pid_exists(pid):
                    self._pid = pid
                    break
            if time.monotonic() >= deadline:
                raise self._failed(f"QEMU did not start within {self._launch_timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(self._pid).parent()
            if parent is not None and "screen" in parent.name().lower():
                self._screen_pid = parent.pid

    def _failed(self, what: str) -> LaunchError:
        code = self.exitcode
        output = self.output()
        status = f" (exit status {code})" if code is not None else ""
        return LaunchError(
            f"{self.name}: {what}{status}.\ncommand: {redact(self.argv)}\noutput:\n{output}",
            exitcode=code,
            command=self.argv,
            output=output,
        )

    # -- shutdown ---------------------------------------------------------------------------

    def shutdown(self, timeout: float = 3.0, hard: bool = False) -> None:
        """Stop QEMU: QMP ``quit`` (or SIGTERM), then SIGKILL; clean up. Idempotent."""
        if self._shut:
            return
        self._shut = True
        try:
            if not hard and self.alive():
                self._soft_shutdown(timeout)
        finally:
            self._cleanup(hard=True, timeout=timeout)

    def _soft_shutdown(self, timeout: float) -> None:
        if self._qmp is not None:
            try:
                self._qmp.execute("quit", _timeout=timeout)
            except QmpError as exc:  # QEMU may close the socket before answering
                log.debug("%s: QMP quit: %s", self.name, exc)
        else:
            self._signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(timeout)

    def _signal(self, sig: signal.Signals) -> None:
        if self._pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self._popen is not None:  # its own session: children (helpers) go too
                os.killpg(self._pid, sig)
            else:
                os.kill(self._pid, sig)

    def _cleanup(self, hard: bool, timeout: float = 3.0) -> None:
        """Kill what is left (QEMU, its screen), reap, close, forget. Never raises OSError."""
        try:
            if hard and self._popen is not None:
                if self._popen.poll() is None:
                    self._signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._popen.wait(min(timeout, 1.0))
                self._signal(signal.SIGKILL)  # stragglers in its group, if any
                self._popen.wait()
            elif hard and self._pid is not None:
                terminate(self._pid, timeout=timeout)
            if self._screen_pid is not None:
                terminate(self._screen_pid, timeout=timeout)
            elif self.screen is not None:  # QEMU never came up: find its screen by screenrc
                _end_screens_using(self.screen.screenrc)
        finally:
            if self._qmp is not None:
                self._qmp.close()
            if self._popen is not None and self._popen.stdout is not None:
                self._popen.stdout.close()
            if self._log is not None:
                self._log.close()
            if self._registry is not None:
                self._registry.forget(self.name)
                self._registry.forget(f"{self.name}.screen")

    def __enter__(self) -> QemuProcess:
        if not self._launched:
            self.launch()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def _end_screens_using(screenrc: Path) -> None:
    """Terminate the screen sessions started with this screenrc (ours only, never a same-named
    one of someone else)."""
    marker = str(screenrc)
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if "screen" in (proc.info["name"] or "").lower() and marker in (
                proc.info["cmdline"] or []
            ):
                terminate(proc.pid, timeout=2.0)


def qemu_machines(binary: str, timeout: float = 10.0) -> frozenset[str]:
    """The machine types ``binary -machine help`` lists (their names and aliases)."""
    lines = _ask(binary, ["-machine", "help"], timeout).splitlines()[1:]  # after the heading
    return frozenset(line.split()[0] for line in lines if line.strip())


def qemu_version(binary: str, timeout: float = 10.0) -> str:
    """First line of ``binary --version`` ("" if it printed nothing); LaunchError if it fails."""
    out = _ask(binary, ["--version"], timeout)
    return out.splitlines()[0] if out else ""


def _ask(binary: str, args: list[str], timeout: float) -> str:
    """What ``binary args`` prints; LaunchError (with its stderr) if it cannot be run."""
    argv = [binary, *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        code = exc.returncode if isinstance(exc, subprocess.CalledProcessError) else None
        output = getattr(exc, "stderr", None) or ""
        raise LaunchError(
            f"cannot run {' '.join(argv)}: {exc}",
            exitcode=code,
            command=argv,
            output=output if isinstance(output, str) else output.decode(errors="replace"),
        ) from exc
    return done.stdout
