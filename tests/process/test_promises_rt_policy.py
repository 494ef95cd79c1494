"""The RT policy a job ran under, checked against what this host allows (no silent fallback).

The agent may run a job best effort only when the kernel refuses the policy. So this test
first probes, independently of farm, whether this host lets a process take SCHED_FIFO /
SCHED_DEADLINE (``chrt``); where it does, the job must run under exactly that policy: the
START event's ``sched`` says so, no "best effort" NOTICE is sent, and the job reads its own
policy from /proc/$$/stat (the shell itself: SCHED_DEADLINE resets on fork). Where the host
refuses, the fallback must be announced.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from tests.process.conftest import AgentClient

pytestmark = pytest.mark.process

CHRT = shutil.which("chrt")


def host_allows(args: list[str]) -> bool:
    """True if ``chrt ARGS true`` succeeds here (the host grants that policy)."""
    assert CHRT is not None, "chrt (util-linux) is needed to probe the host's RT policies"
    done = subprocess.run([CHRT, *args, "true"], capture_output=True, timeout=10)
    return done.returncode == 0


def policy_of(stat_line: str) -> tuple[int, int]:
    """(rt_priority, policy) from a /proc/PID/stat line."""
    fields = stat_line.rsplit(")", 1)[1].split()
    return int(fields[37]), int(fields[38])


CASES = [
    pytest.param({"priority": 42}, ["-f", "42"], "fifo:42", (42, 1), id="fifo"),
    pytest.param(
        {"priority": 128, "period": 1000, "executiontime": 500},
        [
            "-d",
            "--sched-runtime",
            "500000000",
            "--sched-deadline",
            "1000000000",
            "--sched-period",
            "1000000000",
            "0",
        ],
        "deadline:500ms/1000ms/1000ms",
        (0, 6),
        id="deadline",
    ),
]


@pytest.mark.parametrize(("task", "chrt_args", "sched", "expected"), CASES)
def test_job_runs_under_the_rt_policy_the_host_allows(
    client: AgentClient,
    task: dict[str, Any],
    chrt_args: list[str],
    sched: str,
    expected: tuple[int, int],
) -> None:
    allowed = host_allows(chrt_args)
    tasks = [{"id": 0, "pkg": "shell", "config": {"command": "cat /proc/$$/stat"}, **task}]
    events = client.run_taskset(tasks)
    (start,) = [e for e in events if e["type"] == "START"]
    (end,) = [e for e in events if e["type"] == "EXIT"]
    notices = [e for e in events if e["type"] == "NOTICE"]
    if allowed:
        assert notices == []
        assert start["sched"] == sched
        assert policy_of(end["output"]) == expected
    else:  # the host refuses: the agent must say so, and the job runs best effort
        assert len(notices) == 1 and "best effort" in notices[0]["detail"]
        assert start["sched"] == "other"
        assert policy_of(end["output"]) == (0, 0)
