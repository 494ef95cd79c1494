"""``farm netjobs`` without any token says so instead of inventing one in the cwd."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.cli.root import main

CONFIG = 'test0:\n127.0.0.1:1: "echo hi"\nend\n'


def test_netjobs_without_a_token_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FARM_TOKEN", raising=False)
    monkeypatch.delenv("FARM_CONFIG", raising=False)
    (tmp_path / "tests.nj").write_text(CONFIG)
    with contextlib.chdir(tmp_path):
        res = CliRunner().invoke(main, ["netjobs", "tests.nj"], prog_name="farm")
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("farm: error: no agent token") and "--token" in res.stderr
    assert not (tmp_path / ".farm" / "token").exists()  # none made up in the cwd
