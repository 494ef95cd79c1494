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
    assert events[-1] == "JOBS_DONE" and events.count("JOBS_DONE") == 1, events
    assert events.count("START") == events.count("EXIT") == 1, events
    assert warmup.history[before:] == [events]
    threads, _ = workers.counts()
    assert threads >= 1  # its scheduler thread stays in the pool


def test_the_templates_warm_up_is_a_timed_set_with_a_launcher() -> None:
    """Like the experiments: jobs 0 pre-spawned before t0, a launcher thread for job 1."""
    from farm.agent import spawner
    from farm.agent.taskspec import parse_taskset

    assert spawner.timed(parse_taskset([dict(t) for t in warmup.TASKS]))
    events = warmup.run()
    assert events.count("START") == events.count("EXIT") == 3, events
    assert events.count("JOBS_DONE") == 2 and events[-1] == "JOBS_DONE", events
    threads, _ = workers.counts()
    assert threads >= 2  # its scheduler and a launcher stay in the pool
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


def test_the_warm_up_set_goes_over_the_agents_own_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handshake, a sealed request, its reply and the events on a socket: code a host's
    first set runs too (a spare guest translates it before a client comes)."""
    from farm.agent import connection

    seen: list[object] = []
    real = connection.Connection._dispatch

    def spy(self: connection.Connection, message: dict[str, object]) -> None:
        seen.append(message.get("op"))
        real(self, message)

    monkeypatch.setattr(connection.Connection, "_dispatch", spy)
    events = warmup.run(TASKS)
    assert seen == ["start"] and events[-1] == "JOBS_DONE", (seen, events)
