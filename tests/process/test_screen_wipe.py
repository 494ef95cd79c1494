"""Dead screen sessions (a killed screen leaves its socket) are wiped by name only."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest

from farm.backend.screen import wipe_dead

pytestmark = pytest.mark.process


def _sessions() -> str:
    return subprocess.run(
        ["screen", "-ls"], capture_output=True, text=True, timeout=10, check=False
    ).stdout


def _start(name: str) -> int:
    subprocess.run(["screen", "-dmS", name, "sleep", "60"], check=True, timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in _sessions().splitlines():
            if f".{name}\t" in line:
                return int(line.split(".", 1)[0])
        time.sleep(0.05)
    raise AssertionError(f"screen {name} did not start")


def test_a_dead_session_is_wiped_and_a_live_one_of_another_name_kept() -> None:
    dead, live = f"farmwipe{uuid.uuid4().hex[:6]}", f"farmkeep{uuid.uuid4().hex[:6]}"
    dead_pid, live_pid = _start(dead), _start(live)
    try:
        os.kill(dead_pid, signal.SIGKILL)  # the socket stays: "Dead ???"
        time.sleep(0.2)
        assert f".{dead}\t" in _sessions()
        wipe_dead(dead)
        assert f".{dead}\t" not in _sessions()
        wipe_dead(live)  # a live session is never wiped
        assert f".{live}\t" in _sessions()
    finally:
        subprocess.run(
            ["screen", "-S", f"{live_pid}.{live}", "-X", "quit"], timeout=10, check=False
        )
        subprocess.run(["pkill", "-f", "sleep 60"], check=False)
