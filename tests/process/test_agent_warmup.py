"""The warm-up set (farm/agent/warmup.py): a real private set, leaving what a first set makes."""

from __future__ import annotations

import pytest

from farm.agent import commands, warmup, workers
from farm.agent.service import AgentService, RequestError

#: best effort: the test process's pool threads are not raised to SCHED_FIFO
TASKS = [{"id": 0, "pkg": "hey", "numberofjobs": 1, "period": 0, "priority": 0}]


class _Client:
    name = "c"

    def send(self, message: object) -> None:
        pass


def test_warm_up_runs_a_private_set_and_keeps_what_a_first_set_makes() -> None:
    before = len(warmup.history)
    events = warmup.run(TASKS)
    assert events[-3:] == ["START", "EXIT", "JOBS_DONE"], events
    assert warmup.history[before:] == [events]
    threads, _ = workers.counts()
    assert threads >= 2  # its scheduler, launcher and waiter threads stay in the pool
    assert commands.native_workload.cache_info().currsize == 1  # looked up once, kept
    service = AgentService()
    try:
        assert service.handle(_Client(), "status", {}).result["warm_up"][-1] == events
    finally:
        service.shutdown()


def test_a_failing_warm_up_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The template is saved all the same (its guests' first sets do the work then)."""

    def refuse(self: AgentService, client: object, op: str, args: object) -> None:
        raise RequestError("invalid_taskset", "no such workload")

    monkeypatch.setattr(AgentService, "handle", refuse)
    assert warmup.run(TASKS) == []
    assert "the warm-up set failed" in caplog.text
