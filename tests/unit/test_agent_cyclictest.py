"""The ``cyclictest`` pkg: config checks, flags, summary parsing, and a job's exit event
(with a stand-in cyclictest printing Debian's summary format; the vm tier runs the real one)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from farm.agent import commands, cyclictest, pkgs
from farm.agent.runner import Runner
from farm.agent.taskspec import TaskSpec, parse_taskset
from farm.errors import TaskSetError
from farm.taskset import Task, TaskSet

pytestmark = pytest.mark.unit

SUMMARY = """# /dev/cpu_dma_latency set to 0us
policy: fifo: loadavg: 0.00 0.00 0.00 1/60 123

T: 0 ( 1234) P:80 I:1000 C:   1000 Min:      3 Act:    5 Avg:    4 Max:      20
T: 1 ( 1235) P:79 I:1500 C:    667 Min:      2 Act:    6 Avg:    6 Max:      41
"""


def test_summary_combines_the_threads() -> None:
    figures = cyclictest.summary(SUMMARY)
    assert figures == {"min": 2, "avg": 5, "max": 41, "threads": 2, "loops": 1667}
    assert cyclictest.describe(figures).startswith("latency min/avg/max 2/5/41 us")
    assert cyclictest.summary("cyclictest: command failed\n") is None


def test_config_maps_to_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "cyclictest"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    argv = cyclictest.argv({"loops": 50, "interval_us": 200, "priority": 0})
    assert argv == [str(fake), "-q", "-m", "-l", "50", "-i", "200", "-p", "0", "-t", "1"]


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"loops": 0}, "loops"),
        ({"priority": 120}, "priority"),
        ({"nope": 1}, "nope"),
        ({"interval_us": 1.5}, "interval_us"),
        ({"threads": True}, "threads"),
    ],
)
def test_bad_configs_name_the_key(config: dict[str, Any], key: str) -> None:
    problem = cyclictest.check_config(config)
    assert problem is not None and f"config.{key}" in problem
    with pytest.raises(TaskSetError, match=key):
        TaskSet([Task({"pkg": "cyclictest", "config": config})]).validate()


def test_cyclictest_is_a_known_pkg_on_both_sides() -> None:
    assert pkgs.is_known("cyclictest")
    TaskSet([Task({"pkg": "cyclictest", "config": {"loops": 10}})]).validate()
    (spec,) = parse_taskset([{"id": 1, "pkg": "cyclictest", "config": {"loops": 10}}])
    assert spec.pkg == "cyclictest"


def test_a_cyclictest_job_reports_its_latency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "cyclictest"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/args\ncat <<'END'\n{SUMMARY}END\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    events: list[dict[str, Any]] = []
    lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        with lock:
            events.append(event)

    def launcher(task: TaskSpec, index: int, plan: Any) -> Any:
        return commands.build_launch(task, index, plan, {}, tmp_path)

    (spec,) = parse_taskset([{"id": 3, "pkg": "cyclictest", "config": {"loops": 10}}])
    runner = Runner([spec], launcher, emit)
    runner.start()
    try:
        assert runner.wait(30)
    finally:
        runner.stop()
    (end,) = [e for e in events if e["type"] == "EXIT"]
    assert end["latency_us"] == {"min": 2, "avg": 5, "max": 41, "threads": 2, "loops": 1667}
    assert end["detail"].startswith("latency min/avg/max 2/5/41 us")
    assert (tmp_path / "args").read_text().split() == [
        "-q",
        "-m",
        "-l",
        "10",
        "-i",
        "1000",
        "-p",
        "80",
        "-t",
        "1",
    ]


def test_a_missing_cyclictest_is_not_scheduled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(cyclictest, "DEFAULT_PATHS", (str(tmp_path / "none"),))
    with pytest.raises(OSError, match="cyclictest not found"):
        cyclictest.program()
