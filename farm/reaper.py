"""Watchdog process: when the farm process dies (even by SIGKILL), reap what it started.

``start_reaper(state_dir)`` launches ``python -m farm.reaper`` in its own
session. It blocks on a pidfd of the farm process (no polling) and, once that
process is gone, terminates every process recorded in the state dir's
ProcessRegistry by that owner (QEMU guests, screen sessions, dhcpd, agents).
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import subprocess
import sys
from pathlib import Path

from farm.procs import ProcessRegistry

log = logging.getLogger(__name__)


def start_reaper(state_dir: Path) -> subprocess.Popen[bytes]:
    """Start the watchdog for this process; it exits by itself after the reap."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "farm.reaper",
            "--parent",
            str(os.getpid()),
            "--state-dir",
            str(state_dir),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def watch(parent: int, state_dir: Path) -> list[str]:
    """Wait for ``parent`` to exit, then reap its recorded processes."""
    try:
        fd = os.pidfd_open(parent)
    except ProcessLookupError:
        fd = None
    if fd is not None:
        select.select([fd], [], [])
        os.close(fd)
    # The farm is gone now, though it may linger as a zombie until its parent waits
    # for it: its records are reaped whatever its PID looks like.
    return ProcessRegistry(state_dir).reap_stale(dead_owner=parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m farm.reaper")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    watch(args.parent, args.state_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
