"""Process bookkeeping: every host process farm starts is recorded, and reaped by PID.

Records live in ``<state_dir>/pids/<name>.json`` with the process's create
time, so a later farm (after this one was SIGKILLed) reaps exactly what it
left and never a recycled PID. Termination is soft (SIGTERM) then hard.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import time
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when its parent thread dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:  # pragma: no cover - non-Linux
        pass


def terminate(pid: int, timeout: float = 5.0, *, group: bool = False) -> None:
    """SIGTERM ``pid`` (its process group with ``group``), wait, then SIGKILL. Idempotent."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [proc]
    try:
        procs += proc.children(recursive=True)
    except psutil.NoSuchProcess:
        pass
    for p in procs:
        try:
            if group and p is proc:
                os.killpg(os.getpgid(pid), signal.SIGTERM)
            else:
                p.terminate()
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            pass
    alive = wait_exited(procs, timeout)
    for p in alive:
        log.warning("pid %d ignored SIGTERM for %.1fs; killing", p.pid, timeout)
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    wait_exited(alive, timeout)


def wait_exited(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each of ``procs`` exited; those still running after ``timeout``.

    A zombie counts as exited: it holds no port, file or memory any more, and
    reaping it is its parent's business (an init that reaps late, as some
    containers' do, would otherwise add seconds to every guest's teardown).
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.04)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ProcessRegistry:
    """Records of the processes this farm started, by machine name."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "pids"

    def record(self, name: str, pid: int, kind: str, **extra: object) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            created = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            return
        data = {"pid": pid, "create_time": created, "kind": kind, "owner": os.getpid(), **extra}
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(data))
        tmp.replace(self.dir / f"{name}.json")

    def forget(self, name: str) -> None:
        (self.dir / f"{name}.json").unlink(missing_ok=True)

    def entries(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        if not self.dir.is_dir():
            return out
        for path in sorted(self.dir.glob("*.json")):
            try:
                out[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        return out

    def reap_stale(self, dead_owner: int | None = None) -> list[str]:
        """Terminate recorded processes whose owning farm process is gone.

        ``dead_owner``: a farm process known to have exited (the watchdog saw it
        end), reaped whatever its PID looks like now.
        """
        reaped = []
        for name, data in self.entries().items():
            owner = data.get("owner")
            if isinstance(owner, int) and owner not in (os.getpid(), dead_owner) and _runs(owner):
                continue  # another live farm owns it
            pid = data.get("pid")
            if isinstance(pid, int) and _same_process(pid, data.get("create_time")):
                log.warning("reaping %s (pid %d) left by a dead farm", name, pid)
                terminate(pid)
                reaped.append(name)
            self.forget(name)
        return reaped


def _runs(pid: int) -> bool:
    """True while ``pid`` runs; a killed farm that is a zombie (not yet waited for) does not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _same_process(pid: int, create_time: object) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - float(create_time)) < 0.01  # type: ignore[arg-type]
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return False
