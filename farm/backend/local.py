"""``local`` backend: each "machine" is a farm agent process on 127.0.0.1.

No VM at all: for dry runs, development, fast tests, and boards where the
agent runs natively. The same Slot/Distributor code drives it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from farm import resources
from farm.agent.commands import NATIVE_ENV
from farm.agent.protocol import guest_key
from farm.backend.base import Backend, Guest, pid_stopped
from farm.config import FarmConfig
from farm.errors import BackendError, BootError
from farm.image.native import BINARY_NAME
from farm.procs import ProcessRegistry, die_with_parent, terminate

log = logging.getLogger(__name__)
#: s an agent gets to end after SIGTERM: it gives a traffic job 3 s to report its final
#: statistics (farm.agent.commands.TRAFFIC_TERM_GRACE), then reaps and says goodbye
STOP_GRACE = 5.0
WORKDIR_SUFFIX = ".work"  # <state_dir>/local/<name>.work: an agent's jobs and binaries


class LocalGuest(Guest):
    """An agent subprocess; its output is the "console" log."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        port_file: Path,
        console: Path,
        registry: ProcessRegistry,
        workdir: Path | None = None,
    ) -> None:
        self.name = name
        self._registry = registry
        self._proc = proc
        self._port_file = port_file
        self._console = console
        self._workdir = workdir

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def console_log(self) -> Path | None:
        return self._console

    def address(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                text = self._port_file.read_text().strip()
                if text:
                    return "127.0.0.1", int(text)
            except (FileNotFoundError, ValueError):
                pass
            if self._proc.poll() is not None:
                raise BootError(
                    f"{self.name}: agent exited with code {self._proc.returncode} before listening;"
                    f" see {self._console}"
                )
            if time.monotonic() > deadline:
                raise BootError(f"{self.name}: agent did not listen within {timeout:.0f}s")
            time.sleep(delay)  # the agent writes its port file once; ~150 ms after spawn
            delay = min(delay * 2, 0.02)

    def alive(self) -> bool:
        return self._proc.poll() is None and not pid_stopped(self._proc.pid)

    def destroy(self) -> None:
        if not self._first_destroy():
            return
        try:
            terminate(self._proc.pid, timeout=STOP_GRACE)
        finally:
            self._proc.wait()
            self._port_file.unlink(missing_ok=True)
            if self._workdir is not None:  # the agent keeps it at exit; a killed one cannot
                shutil.rmtree(self._workdir, ignore_errors=True)
            self._registry.forget(self.name)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL an agent that never got its key, with its process group (it has a session
    of its own), and reap it: it is not in the registry yet, nothing else would."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class LocalBackend(Backend):
    """Spawns ``python -m farm.agent`` processes that die with farm."""

    kind = "local"

    def __init__(self, config: FarmConfig) -> None:
        self.config = config
        self.registry = ProcessRegistry(config.state_dir)

    def spawn(self, name: str, token: str) -> Guest:
        run_dir = self.config.state_dir / "local"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        port_file = run_dir / f"{name}.port"
        port_file.unlink(missing_ok=True)
        console = self.config.log_dir / f"{name}.console.log"
        # its jobs and binaries: under farm's state, removed by destroy() (or the next
        # farm's reap_stale()) however the agent ended; a SIGKILLed agent's own temporary
        # directory would stay in /tmp
        workdir = run_dir / f"{name}{WORKDIR_SUFFIX}"
        shutil.rmtree(workdir, ignore_errors=True)
        argv = [
            sys.executable,
            "-m",
            "farm.agent",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--heartbeat",
            str(self.config.heartbeat),
            "--guest",
            name,
            "--workdir",
            str(workdir),
        ]
        # the guest's own key goes down a pipe: never on argv or in the environment
        key_r, key_w = os.pipe()
        argv += ["--token-file", f"/dev/fd/{key_r}"]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        env["PYTHONPATH"] = str(resources.package_root())  # this farm, checkout or wheel
        native = Path(self.config.image_dir, BINARY_NAME).resolve()
        if os.environ.get(NATIVE_ENV):  # farm's own environment names one: that one
            env[NATIVE_ENV] = os.environ[NATIVE_ENV]
        elif native.is_file():  # built by `farm image build`; else the agent falls back to Python
            env[NATIVE_ENV] = str(native)
        proc: subprocess.Popen[bytes] | None = None
        try:
            with console.open("ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    pass_fds=(key_r,),
                    preexec_fn=die_with_parent,
                    start_new_session=True,  # SIGINT at the terminal is farm's, not the agent's
                )
            os.close(key_r)
            key_r = -1
            with os.fdopen(key_w, "w") as pipe:
                key_w = -1
                pipe.write(guest_key(token, name) + "\n")
        except BaseException as exc:
            if proc is not None:  # started, but without its key (e.g. EPIPE: it died at once)
                _kill(proc)
            if isinstance(exc, OSError):
                raise BackendError(f"cannot start agent process for {name}: {exc}") from exc
            raise
        finally:
            for fd in (key_r, key_w):
                if fd >= 0:
                    os.close(fd)
        self.registry.record(name, proc.pid, "local-agent")
        log.getChild(name).info("spawned local agent pid %d", proc.pid)
        return LocalGuest(name, proc, port_file, console, self.registry, workdir)

    def reap_stale(self) -> list[str]:
        """Kill the agents of dead farms, remove every work directory no live agent owns."""
        reaped = self.registry.reap_stale()
        owned = set(self.registry.entries())
        run_dir = self.config.state_dir / "local"
        for path in run_dir.glob(f"*{WORKDIR_SUFFIX}") if run_dir.is_dir() else ():
            if path.name.removesuffix(WORKDIR_SUFFIX) not in owned:
                shutil.rmtree(path, ignore_errors=True)
        return reaped
