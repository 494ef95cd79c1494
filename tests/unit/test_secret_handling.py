"""Where secrets may not go: error texts, world-readable dirs (issue 15 part 1)."""

from __future__ import annotations

import stat
from pathlib import Path

from farm.errors import LaunchError
from farm.session.token import ensure_token_file, secure_dirs


def test_launch_error_command_hides_a_token() -> None:
    err = LaunchError("x", command=["qemu", "-append", "quiet farm.token=s3cr3t farm.port=1"])
    assert err.command == ["qemu", "-append", "quiet farm.token=*** farm.port=1"]


def test_secure_dirs_whatever_made_them(tmp_path: Path) -> None:
    state, log = tmp_path / "state", tmp_path / "log"
    state.mkdir(mode=0o755)
    (state / "journal.db").write_text("x")
    (state / "journal.db").chmod(0o644)
    secure_dirs(state, log)  # log does not exist yet: made 0700
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "journal.db").stat().st_mode) == 0o600
    token = ensure_token_file(state)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
