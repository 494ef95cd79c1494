"""``farm run --session-params JSON``: validated before anything starts, handed to each session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.cli.root import main


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the farm's state and log directories go there


def _run(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", *args], prog_name="farm")
    return result.exit_code, result.output


def test_session_params_reach_the_session(tmp_path: Path) -> None:
    admission = {"optimize": {"goal": {"fairness": {"apply": 1}}, "query_interval": 1000}}
    code, out = _run(
        tmp_path,
        "example.Hey0TaskSet",
        "127.0.0.1",
        "--session",
        "StdioSession",
        "--json",
        "--session-params",
        json.dumps(admission),
    )
    assert code == 0, out
    assert "== session parameters\n" + json.dumps([admission]) in out


def test_bad_session_params_exit_2_naming_the_option(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "example.Hey0TaskSet", "--session-params", "{bad")
    assert code == 2 and "--session-params is not valid JSON" in out
    code, out = _run(tmp_path, "example.Hey0TaskSet", "--session-params", "3")
    assert code == 2 and "JSON object (one parameter) or array" in out
