"""The farm command on agent processes (local backend): run, list, errors and exit codes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.helpers import run_farm


def test_run_json_on_local_agents_writes_results(tmp_path: Path) -> None:
    res = run_farm(
        tmp_path,
        "run",
        "example.VariantsTaskSet",
        "--machines",
        "3",
        "--backend",
        "local",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["job"]["finished"] == 4 and summary["job"]["bad"] == 0
    with sqlite3.connect(tmp_path / "results.db") as con:
        assert con.execute("SELECT COUNT(*) FROM tasksets WHERE state='finished'").fetchone() == (
            4,
        )
    assert "INFO" not in res.stderr  # the log file gets INFO, the terminal only warnings
    assert "finished" in (tmp_path / "log" / "distributor.log").read_text()


def test_live_view_run_prints_summary(tmp_path: Path) -> None:
    res = run_farm(
        tmp_path,
        "run",
        "example.Hey0TaskSet",
        "--backend",
        "local",
        "--monitor",
        "LoggingMonitor",
        "--monitor",
        "CsvMonitor",
    )
    assert res.returncode == 0, res.stderr
    assert "1 finished, 0 stopped, 0 bad" in res.stdout
    assert (tmp_path / "events.csv").exists() and (tmp_path / "log" / "monitor.log").exists()


def test_bad_inputs_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    res = run_farm(tmp_path, "run", "example.NoSuchSet", "--backend", "local")
    assert (
        res.returncode == 2 and "unknown task set" in res.stderr and "Traceback" not in res.stderr
    )
    res = run_farm(tmp_path, "run", "example.Hey0TaskSet", "--backend", "local", "--machines", "9")
    assert res.returncode == 2 and "1..7" in res.stderr and "Traceback" not in res.stderr
    res = run_farm(tmp_path, "run", "example.Hey0TaskSet", "--monitor", "NoMonitor")
    assert res.returncode == 2 and "NoMonitor" in res.stderr


def test_list_shows_first_docstring_lines(tmp_path: Path) -> None:
    for what, name in (
        ("--tasksets", "Hey0TaskSet"),
        ("--monitors", "SqliteMonitor"),
        ("--sessions", "GenodeSession"),
    ):
        res = run_farm(tmp_path, "list", what)
        assert res.returncode == 0 and name in res.stdout
