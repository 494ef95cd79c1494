"""How the end of a job process maps to an event type (fake outcomes, no processes)."""

from __future__ import annotations

import signal
from types import SimpleNamespace

from farm.agent import workloads
from farm.agent.jobs import Job, Launch, Outcome, classify


def fake_job(
    status: int, cpu: float = 0.01, maxrss_kb: int = 1000, builtin: bool = True,
    budget: float = 0.0, quota: int = 0, duration: float = 0.01, parent_kb: int = 500,
) -> Job:  # fmt: skip
    launch = Launch(["x"], {}, "/", builtin, budget_s=budget, quota=quota)
    job = Job(1, 0, release=100.0, launch=launch, on_exit=lambda j: None)
    rusage = SimpleNamespace(ru_utime=cpu, ru_stime=0.0, ru_maxrss=maxrss_kb)
    job.outcome = Outcome(status, rusage, end=100.0 + duration)
    job.parent_maxrss = parent_kb * 1024
    return job


def exited(code: int) -> int:
    return code << 8


def test_plain_exit_and_critical_time() -> None:
    assert classify(fake_job(exited(0)), 0) == ("EXIT", None)
    assert classify(fake_job(exited(0), duration=0.010), 20) == ("EXIT", None)
    kind, detail = classify(fake_job(exited(0), duration=0.050), 20)
    assert kind == "EXIT_CRITICAL" and "critical time 20 ms" in (detail or "")


def test_errors() -> None:
    assert classify(fake_job(exited(3)), 0) == ("EXIT_ERROR", "exit status 3")
    assert classify(fake_job(signal.SIGSEGV), 0) == ("EXIT_ERROR", "killed by signal SIGSEGV")
    # an error wins over lateness
    assert classify(fake_job(exited(1), duration=5), 1)[0] == "EXIT_ERROR"


def test_budget() -> None:
    for status in (signal.SIGPROF, signal.SIGXCPU):
        kind, detail = classify(fake_job(status, cpu=0.2, budget=0.2), 0)
        assert kind == "EXIT_ERROR" and (detail or "").startswith("budget exceeded")
    assert (classify(fake_job(signal.SIGKILL, cpu=3.0, budget=1.0), 0)[1] or "").startswith(
        "budget"
    )
    assert classify(fake_job(signal.SIGKILL, cpu=0.1, budget=1.0), 0)[1] == (
        "killed by signal SIGKILL"
    )
    # without a budget SIGPROF is just a signal
    assert classify(fake_job(signal.SIGPROF), 0)[1] == "killed by signal SIGPROF"


def test_quota() -> None:
    job = fake_job(exited(workloads.EXIT_QUOTA), quota=1 << 20)
    assert classify(job, 0)[0] == "OUT_OF_QUOTA"
    # the same status from an external program is its own business
    external = fake_job(exited(workloads.EXIT_QUOTA), quota=1 << 20, builtin=False)
    assert classify(external, 0)[0] == "EXIT_ERROR"
    assert "quota of 1048576 bytes" in (classify(external, 0)[1] or "")
    big = fake_job(exited(0), quota=1 << 20, builtin=False, maxrss_kb=4096, parent_kb=2048)
    assert classify(big, 0)[0] == "OUT_OF_QUOTA"
    # ru_maxrss not above the agent's own peak says nothing about the job
    inherited = fake_job(exited(0), quota=1 << 20, builtin=False, maxrss_kb=4096, parent_kb=8192)
    assert classify(inherited, 0) == ("EXIT", None)
