"""The fallback end of a task set or exec run without a cgroup: a sweep by environment marker.

Every process of a group carries ``name=value`` in its environment
(:mod:`farm.agent.guard`); a sweep of ``/proc/*/environ`` finds and SIGKILLs
them, setsid'ed or double-forked ones included (those that kept the
environment).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

SWEEP_PASSES = 3
EMPTY_WAIT = 1.0  # s a closed group may take to empty (SIGKILLed tasks exiting)


def sweep(name: str, value: str) -> int:
    """SIGKILL every process whose environment holds ``name=value`` (a few passes: forks).

    Returns once they are dead (zombies at most; up to :data:`EMPTY_WAIT`), like
    a cgroup's kill: a stop's reply means its processes are gone.
    """
    wanted = f"{name}={value}".encode()
    own = os.getpid()
    killed = 0
    pids: set[int] = set()
    for _ in range(SWEEP_PASSES):
        found = 0
        for entry_name in os.listdir("/proc"):
            if not entry_name.isdigit() or int(entry_name) == own:
                continue
            try:
                with open(f"/proc/{entry_name}/environ", "rb") as fh:
                    environ = fh.read()
            except OSError:
                continue  # gone, or not ours to read
            if wanted in environ.split(b"\0"):
                with contextlib.suppress(OSError):
                    os.kill(int(entry_name), signal.SIGKILL)
                    found += 1
                    pids.add(int(entry_name))
        killed += found
        if not found:
            break
    deadline = time.monotonic() + EMPTY_WAIT
    while not all(_dead(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.005)
    return killed


def _dead(pid: int) -> bool:
    """True once ``pid`` has exited (gone, or a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    end = stat.rfind(b")")
    return stat[end + 2 : end + 3] in (b"Z", b"X")
