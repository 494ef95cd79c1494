"""examples/testing (a user's task set and monitor tested with farm.testing) passes.

It runs as a user would run it: copied into a directory of its own, with pytest
finding farm's fixtures through the plugin (``-p`` only where the installed
metadata predates the ``pytest11`` entry point).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from tests.helpers import REPO


def test_example_suite_passes(tmp_path: Path) -> None:
    project = tmp_path / "my-project"
    shutil.copytree(REPO / "examples" / "testing", project)
    registered = any(ep.value == "farm.testing.plugin" for ep in entry_points(group="pytest11"))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    if not registered:
        args += ["-p", "farm.testing.plugin"]
    done = subprocess.run(
        args,
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "5 passed" in done.stdout
