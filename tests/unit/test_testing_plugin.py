"""farm.testing: its fixtures work (in farm's own session too), the plugin stays light,
and optional dependencies that are missing are named with the extra that brings them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from typing import Any

import pytest

from farm.errors import MissingDependency
from farm.monitors import PostgresMonitor
from farm.taskset import Task, TaskSet
from farm.testing import FakeFarm, RecordingMonitor
from tests.helpers import REPO


def sets(n: int) -> TaskSet:
    return TaskSet([Task({"pkg": "hey", "period": 10, "numberofjobs": 2, "x-run": range(n)})])


def test_entry_point_registers_the_plugin() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"farm": "farm.testing.plugin"}


def test_plugin_import_is_light_and_has_no_autouse_fixture() -> None:
    code = (
        "import sys, farm.testing.plugin as p\n"
        "heavy = {'psycopg', 'matplotlib', 'numpy', 'farm.core.distributor', 'farm.backend'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == "[]"
    assert "autouse=True" not in (REPO / "farm" / "testing" / "plugin.py").read_text()


def test_fake_farm_survives_a_crash_and_a_hang(farm_fake: FakeFarm) -> None:
    rec = RecordingMonitor()
    farm_fake.add(sets(6), rec, machines=2)
    farm_fake.crash(1)
    farm_fake.hang(1)
    assert farm_fake.wait(timeout=60)
    assert sorted(rec.finished) == list(range(6))
    assert rec.bad == []
    assert set(rec.event_types()) >= {"START", "EXIT", "JOBS_DONE"}


def test_failed_boots_are_retried(farm_fake: FakeFarm, farm_recorder: RecordingMonitor) -> None:
    farm_fake.fail_boots = 2
    farm_fake.add(sets(2), farm_recorder)
    assert farm_fake.wait(timeout=60)
    assert sorted(farm_recorder.finished) == [0, 1]
    assert farm_fake.backend.spawned[:2] and farm_fake.fail_boots == 0


def test_farm_config_keeps_state_in_the_test_dir(farm_config: Any, tmp_path: Any) -> None:
    assert farm_config.backend == "local"
    assert farm_config.state_dir == tmp_path / "state"
    assert farm_config.log_file is True


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'farm\[postgres\]'"):
        PostgresMonitor("dbname=x").__taskset_start__(object())


def test_missing_matplotlib_names_the_extra(tmp_path: Any) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # import matplotlib -> ImportError
        "from farm.cli import main; main(['report', 'results.db'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'farm[report]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_pyroute2_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from farm.bridge import bridge

    monkeypatch.setitem(sys.modules, "pyroute2", None)
    with pytest.raises(MissingDependency, match=r"pip install 'farm\[bridge\]'"):
        bridge._ipr()


def test_missing_postgres_skips_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from farm.testing import plugin

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        plugin._missing("PostgreSQL server binaries not installed")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        plugin._missing("PostgreSQL server binaries not installed")
