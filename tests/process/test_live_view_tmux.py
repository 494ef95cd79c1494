"""``farm run``'s live view on a real terminal: a 120-column tmux pane, captured.

The view must redraw in place from its first frame (one header, one table,
no stale narrower copy above it), log records must print above it through
rich's handler, and a clean end or a Ctrl-C must log no WARNING.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (scripts/setup installs it)"
)


class Pane:
    """A detached tmux server of its own with one 120x50 pane running a shell command."""

    def __init__(self, cwd: Path, command: str) -> None:
        self.socket = f"farm-test-{uuid.uuid4().hex[:8]}"
        env = f"PYTHONPATH={shlex.quote(str(REPO))}"
        # the shell outlives any Ctrl-C sent to farm, so the pane stays for capture
        script = (
            f"trap : INT; cd {shlex.quote(str(cwd))} && {env} {command}; "
            "echo EXIT=$?; trap '' INT; sleep 600"
        )
        self.tmux("new-session", "-d", "-x", "120", "-y", "50", "-s", "t", script)

    def tmux(self, *args: str) -> str:
        res = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={k: v for k, v in os.environ.items() if k != "TMUX"},
        )
        assert res.returncode == 0, res.stderr
        return res.stdout

    def screen(self) -> str:
        """The pane's whole history and screen, as the user sees it."""
        return self.tmux("capture-pane", "-p", "-t", "t", "-S", "-", "-J")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def farm_cmd() -> str:
    return f"{shlex.quote(sys.executable)} -m farm.cli"


@pytest.fixture
def pane_factory(tmp_path: Path) -> Iterator[list[Pane]]:
    panes: list[Pane] = []
    yield panes
    for pane in panes:
        pane.close()


def test_live_view_redraws_cleanly_and_ends_without_warnings(
    tmp_path: Path, farm_cmd: str, pane_factory: list[Pane]
) -> None:
    pane = Pane(tmp_path, f"{farm_cmd} run traffic.TrafficTaskSet --backend local")
    pane_factory.append(pane)
    wait_for("farm run to end", lambda: "EXIT=" in pane.screen(), timeout=240)
    screen = pane.screen()
    assert "EXIT=0" in screen, screen
    assert screen.count("TrafficTaskSet ━") == 1, screen  # one progress header, no stale copy
    titles = [line for line in screen.splitlines() if line.strip() == "machines"]
    assert screen.count("┏━") == 1 and len(titles) == 1, screen  # one table
    assert "1 finished, 0 stopped, 0 bad" in screen, screen
    assert "WARNING" not in screen and "killed" not in screen, screen


def interrupted_run(tmp_path: Path, farm_cmd: str, pane_factory: list[Pane]) -> Pane:
    """``farm run`` of traffic sets on two local machines, sent one Ctrl-C once a set runs."""
    pane = Pane(tmp_path, f"{farm_cmd} run traffic.TrafficTaskSet --backend local -m 2")
    pane_factory.append(pane)
    wait_for("a set to run", lambda: "running" in pane.screen(), timeout=240)
    pane.tmux("send-keys", "-t", "t", "C-c")
    return pane


def test_ctrl_c_reports_stops_without_warnings(
    tmp_path: Path, farm_cmd: str, pane_factory: list[Pane]
) -> None:
    pane = interrupted_run(tmp_path, farm_cmd, pane_factory)
    wait_for("farm run to end", lambda: "EXIT=" in pane.screen(), timeout=120)
    screen = pane.screen()
    assert "EXIT=130" in screen and "farm: stopping" in screen, screen
    assert "WARNING" not in screen and "guest lost" not in screen, screen
    log = (tmp_path / "log" / "distributor.log").read_text()
    assert "guest lost" not in log and "machine stopped" in log, log


def test_second_ctrl_c_kills_and_exits_without_traceback(
    tmp_path: Path, farm_cmd: str, pane_factory: list[Pane]
) -> None:
    pane = interrupted_run(tmp_path, farm_cmd, pane_factory)
    wait_for("farm to say it stops", lambda: "farm: stopping" in pane.screen(), timeout=60)
    pane.tmux("send-keys", "-t", "t", "C-c")
    pane.tmux("send-keys", "-t", "t", "C-c")  # a third one is ignored: the kill is under way
    wait_for("farm run to end", lambda: "EXIT=" in pane.screen(), timeout=120)
    screen = pane.screen()
    assert "EXIT=130" in screen, screen
    assert "Traceback" not in screen and "_KillRequested" not in screen, screen
