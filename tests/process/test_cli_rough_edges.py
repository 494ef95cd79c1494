"""Rough edges a new user hits with the ``farm`` command (issue 17)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, run_farm


def test_list_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``farm list --tasksets | head -3``: the reader gone, no BrokenPipeError report."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before farm writes a line: every write fails
    try:
        res = subprocess.run(
            [sys.executable, "-m", "farm.cli", "list", "--tasksets"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert "BrokenPipe" not in res.stderr and "error" not in res.stderr, res.stderr
    assert res.returncode in (0, 1)


def test_json_is_the_only_stdout_even_with_a_printing_session(tmp_path: Path) -> None:
    res = run_farm(
        tmp_path,
        *("run", "example.Hey0TaskSet", "--backend", "local"),
        *("--session", "StdioSession", "--json"),
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["job"]["finished"] == 1  # one document, nothing else
    assert "== task set on" in res.stderr  # the session's dry-run text went to stderr


def test_a_set_that_never_ends_is_refused_by_farm_run_and_marked_in_list(tmp_path: Path) -> None:
    res = run_farm(tmp_path, "run", "traffic.TrafficServerTaskSet", "--backend", "local")
    assert res.returncode == 2 and "never end" in res.stderr, res.stderr
    assert res.stderr.startswith("farm: error: ")
    listing = run_farm(tmp_path, "list", "--tasksets").stdout.splitlines()
    server = next(line for line in listing if line.startswith("traffic.TrafficServerTaskSet"))
    assert "not for `farm run`" in server
    assert all("not for" not in line for line in listing if line is not server)
