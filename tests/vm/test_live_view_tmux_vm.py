"""``farm run`` on QEMU guests in a 120-column tmux pane: log records printed while the
live view runs (here the KVM probe's, forced by disabling its cache) go above the view
instead of tearing it, so the first frames leave no stale, narrower header behind."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import pytest

from farm.image import ImageInfo
from tests.helpers import wait_for
from tests.process.test_live_view_tmux import Pane

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (scripts/setup)"
)


@pytest.mark.timeout(400)
def test_qemu_run_in_tmux_has_one_header_and_logs_above_it(
    tmp_path: Path, image: ImageInfo
) -> None:
    (tmp_path / "farm.toml").write_text(f'image_dir = "{image.kernel.parent}"\n')
    command = (
        f"FARM_ACCEL_CACHE=off {shlex.quote(sys.executable)} -m farm.cli "
        "run example.Hey1TaskSet --backend qemu -m 2"
    )
    pane = Pane(tmp_path, command)
    try:
        wait_for("farm run to end", lambda: "EXIT=" in pane.screen(), timeout=360)
        screen = pane.screen()
    finally:
        pane.close()
    assert "EXIT=0" in screen, screen
    assert screen.count("Hey1TaskSet ━") == 1, screen  # no stale copy of the first frames
    assert len([ln for ln in screen.splitlines() if ln.strip() == "machines"]) == 1, screen
    assert "killed" not in screen and "guest lost" not in screen, screen
    header = screen.index("Hey1TaskSet ━")
    warnings = [i for i in range(len(screen)) if screen.startswith("WARNING", i)]
    assert all(i < header for i in warnings), screen  # logged above the view, never through it
