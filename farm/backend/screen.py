"""screen sessions farm starts for guest consoles (``screen -xr qemuN`` attaches).

Sessions are addressed by ``<pid>.<name>``, never by bare name, so another
farm's (or the user's) session of the same name is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import subprocess
import time
from pathlib import Path

from farm.procs import terminate


def wipe_dead(name: str) -> None:
    """Remove dead screen sessions named ``name`` (left by a crash or a reboot).

    A dead ``<pid>.qemu1`` socket makes ``screen -xr qemu1`` ambiguous for the user
    and looks like a leftover session; live sessions (another farm's) are untouched.
    """
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["screen", "-wipe", name],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=5,
            check=False,
        )


def quit_screen(name: str, screen: subprocess.Popen[bytes]) -> None:
    """Quit farm's screen session ``<pid>.<name>`` and reap the screen process."""
    if screen.poll() is None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["screen", "-S", f"{screen.pid}.{name}", "-X", "quit"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=5,
                check=False,
            )
        try:
            screen.wait(timeout=3)
        except subprocess.TimeoutExpired:
            terminate(screen.pid, timeout=2.0)
    screen.wait()
    wipe_dead(name)


def wait_screen_socket(screen: subprocess.Popen[bytes], name: str, glog: logging.Logger) -> None:
    """Wait (bounded) until ``screen -xr name`` can attach: the session socket exists."""
    user = pwd.getpwuid(os.getuid()).pw_name
    sock = Path(os.environ.get("SCREENDIR") or f"/run/screen/S-{user}") / f"{screen.pid}.{name}"
    deadline = time.monotonic() + 3.0
    delay = 0.005
    while not sock.exists():
        if screen.poll() is not None or time.monotonic() > deadline:
            glog.warning("screen session %s did not come up (exit %s)", sock.name, screen.poll())
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
