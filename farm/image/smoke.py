"""Boot a guest image once, the plain way: QEMU child process, agent handshake, QMP quit.

Used to check a freshly built image (tests/vm, bench/boot.py). The real
machine management with screen/libvirt lives in :mod:`farm.backend`; this is
the smallest honest thing that shows an image works.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from farm.agent.protocol import Channel, ProtocolViolation, client_handshake
from farm.errors import AuthError, BootError, LaunchError
from farm.profile import MachineProfile
from farm.qemu import QemuProcess, free_port
from farm.session.dial import connect_greeted

log = logging.getLogger(__name__)

#: Per-attempt budget for dialling (staggered connections, see
#: farm.session.dial) and for the handshake once the agent greeted us; QEMU's
#: liveness is checked between attempts.
ATTEMPT_TIMEOUT = 1.0
HANDSHAKE_TIMEOUT = 5.0
RETRY_PAUSE = 0.05


@dataclass
class Guest:
    """One running QEMU child: its process, agent port, console log and QMP socket.

    ``host`` is where the agent is reached: 127.0.0.1 with user-mode networking
    (``port`` is the hostfwd port), the guest's own address on a bridge.
    """

    name: str
    proc: QemuProcess
    port: int
    console: Path
    qmp: Path
    started: float
    argv: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"

    def console_text(self) -> str:
        """What the guest printed on its serial console so far."""
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_agent(self, token: str, timeout: float = 60.0) -> Channel:
        """Connect and complete the handshake; return the channel. BootError on failure.

        AuthError is raised at once if the agent refuses the token.
        """
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BootError(
                    f"{self.name}: QEMU exited with {self.proc.returncode} before the agent "
                    f"answered; console:\n{self.console_text()[-2000:]}"
                )
            budget = min(ATTEMPT_TIMEOUT, max(0.05, deadline - time.monotonic()))
            try:
                sock = connect_greeted(self.host, self.port, budget)
            except OSError as exc:  # refused (port not bound yet), closed, or all silent
                last = exc
            else:
                try:
                    sock.settimeout(HANDSHAKE_TIMEOUT)
                    channel = client_handshake(sock, token)
                except PermissionError as exc:
                    sock.close()
                    raise AuthError(f"{self.name}: {exc}") from exc
                except (OSError, ConnectionError, ProtocolViolation) as exc:
                    sock.close()
                    last = exc
                else:
                    sock.settimeout(None)
                    return channel
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(RETRY_PAUSE)  # wakes at once if QEMU dies
        raise BootError(
            f"{self.name}: no agent handshake within {timeout:g} s (last: {last!r}); "
            f"console:\n{self.console_text()[-2000:]}"
        )

    def wait_for_console(self, needle: str, timeout: float = 60.0) -> str:
        """Wait until the console log contains ``needle`` (or QEMU exits); return the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.console_text()
            if needle in text:
                return text
            if self.proc.poll() is not None:
                return self.console_text()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.1)
        raise BootError(f"{self.name}: {needle!r} not on the console within {timeout:g} s")

    def stop(self, timeout: float = 5.0) -> int | None:
        """QMP ``quit``; SIGTERM, then SIGKILL if QEMU lingers. Returns QEMU's exit status."""
        self.proc.shutdown(timeout)
        return self.proc.exitcode


@contextlib.contextmanager
def boot(
    profile: MachineProfile,
    token: str | None,
    workdir: Path,
    *,
    name: str = "smoke",
    accel: str | None = None,
    extra: Sequence[str] = (),
) -> Iterator[Guest]:
    """Start one guest (console to ``workdir/<name>.console.log``); always stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    console = workdir / f"{name}.console.log"
    qmp = workdir / f"{name}.qmp"
    console.unlink(missing_ok=True)
    qmp.unlink(missing_ok=True)
    port = free_port()
    argv = profile.qemu_argv(
        name,
        hostfwd_port=port,
        token=token,
        console=console,
        qmp_socket=qmp,
        accel=accel,
        extra=extra,
    )
    log.info("starting %s", " ".join(argv))
    started = time.monotonic()
    proc = QemuProcess(argv, name=name, log_file=workdir / f"{name}.qemu.log", qmp_socket=qmp)
    try:
        proc.launch()
    except LaunchError as exc:
        raise BootError(f"cannot start {argv[0]}: {exc}") from exc
    guest = Guest(name, proc, port, console, qmp, started, argv)
    try:
        yield guest
    finally:
        guest.stop()
