"""``farm console NAME`` attaches to the screen session of the current farm's machine only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from farm.cli.console import session_of
from farm.errors import ConfigError
from farm.procs import ProcessRegistry


def test_console_resolves_the_farm_of_the_state_dir(tmp_path: Path) -> None:
    mine, other = tmp_path / "a", tmp_path / "b"
    ProcessRegistry(mine).record("qemu1.screen", os.getpid(), "screen")
    assert session_of(mine, "qemu1") == f"{os.getpid()}.qemu1"  # by PID: unambiguous
    with pytest.raises(ConfigError, match=r"no console 'qemu2'.*consoles: qemu1"):
        session_of(mine, "qemu2")
    with pytest.raises(ConfigError, match="is farm running here"):
        session_of(other, "qemu1")
