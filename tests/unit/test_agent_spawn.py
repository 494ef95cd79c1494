"""Job spawning: a preexec_fn (fork + Python in the child) only when the child needs set-up."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from farm.agent import guard, jobs, pspawn, sched

pytestmark = pytest.mark.unit


def _spawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **launch: Any) -> dict[str, Any]:
    """Spawn ``true`` with ``launch`` options through subprocess (posix_spawn off, as without
    ctypes); return the keyword arguments Popen got."""
    monkeypatch.setattr(pspawn, "available", lambda: False)
    seen: dict[str, Any] = {}
    real = subprocess.Popen

    def spy(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        if kwargs.get("env", {}).get(guard.GUARD_ENV) is not None or "preexec_fn" in kwargs:
            seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    done: list[jobs.Job] = []
    spec = jobs.Launch(
        argv=["true"], env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path), builtin=False, **launch
    )
    job = jobs.Job(1, 0, time.monotonic(), spec, done.append)
    job.spawn()
    assert job.join(10)
    job.close_output()
    assert done == [job] and job.outcome is not None and job.outcome.code == 0
    return seen


def test_plain_job_gets_no_preexec_fn_but_the_guard_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = _spawn(tmp_path, monkeypatch)
    assert kwargs["preexec_fn"] is None  # subprocess may vfork
    assert kwargs["env"][guard.GUARD_ENV]
    assert kwargs["process_group"] == 0


@pytest.mark.parametrize(
    "launch",
    [
        {"sched": sched.SchedPlan("fifo", 1)},
        {"budget_s": 5.0},
        {"quota": 1 << 34},
    ],
    ids=["fifo", "budget", "quota"],
)
def test_child_set_up_keeps_the_preexec_fn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launch: dict[str, Any]
) -> None:
    kwargs = _spawn(tmp_path, monkeypatch, **launch)
    assert kwargs["preexec_fn"] is not None  # policy and limits before the first instruction


def test_without_a_guard_jobs_get_pdeathsig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "entry", lambda: None)
    kwargs = _spawn(tmp_path, monkeypatch)
    assert kwargs["preexec_fn"] is not None
    assert guard.GUARD_ENV not in kwargs["env"]


def test_budget_still_enforced_on_the_preexec_path(tmp_path: Path) -> None:
    done: list[jobs.Job] = []
    spec = jobs.Launch(
        argv=["sh", "-c", "while :; do :; done"],
        env={"PATH": "/usr/bin:/bin"},
        cwd=str(tmp_path),
        builtin=False,
        budget_s=0.2,
    )
    job = jobs.Job(1, 0, time.monotonic(), spec, done.append)
    job.spawn()
    assert job.join(30)
    job.close_output()
    kind, detail = jobs.classify(job, 0)
    assert kind == "EXIT_ERROR" and detail is not None and "budget exceeded" in detail
