"""Traffic workloads between two real agents (loopback), each driven by a FarmSession."""

from __future__ import annotations

import time
from itertools import islice
from typing import Any

from farm.agent.traffic.config import client_config, draws
from farm.events import Event, EventType
from farm.session import FarmSession
from farm.taskset import TaskSet
from farm.tasksets.traffic import TrafficTaskSet, client_task, server_task
from tests.helpers import free_port
from tests.process.conftest import AgentProcess

CLIENT_SECONDS = 5.0
FIXED = {"size": "fixed:700", "think": "exp:0.005", "seed": 3}
UNIFORM = {"size": "uniform:100-1000", "think": "uniform:0-0.01", "seed": 4}


def session_for(agent: AgentProcess) -> FarmSession:
    return FarmSession(agent.host, agent.port, token=agent.token, connect_deadline=20.0)


def variant(tasks: list[Any], name: str) -> TaskSet:
    taskset = TaskSet(tasks)
    concrete = next(taskset.variants())
    concrete.job_id = name  # type: ignore[attr-defined]
    return concrete


def run_until(session: FarmSession, done: Any, timeout: float) -> list[Event]:
    """Collect events until ``done(events)`` holds (bounded)."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        assert time.monotonic() < deadline, f"condition not met in {timeout} s: {events}"
        events += session.run(0.5)
    return events


def exit_stats(events: list[Event], task_id: int) -> dict[str, Any]:
    (exit_event,) = [e for e in events if e.task_id == task_id and e.is_exit]
    stats = exit_event.extra.get("stats")
    assert isinstance(stats, dict) and stats["final"], f"no final stats: {exit_event}"
    return stats


def stat_notices(events: list[Event], task_id: int) -> list[dict[str, Any]]:
    return [
        e.extra["stats"]
        for e in events
        if e.type is EventType.NOTICE and e.task_id == task_id and "stats" in e.extra
    ]


def test_server_on_a_client_on_b(agent_factory: Any) -> None:
    a, b = agent_factory(), agent_factory()
    port = free_port()
    server_set = variant([server_task(port, "echo", host="127.0.0.1")], "traffic-server")
    servers = f"127.0.0.1:{port}"
    client_set = variant(
        [
            {"id": 1, **client_task(servers, duration=CLIENT_SECONDS, **FIXED)},
            {"id": 2, **client_task(servers, duration=CLIENT_SECONDS, **UNIFORM)},
        ],
        "traffic-client",
    )
    with session_for(a) as sa, session_for(b) as sb:
        sa.start(server_set)
        server_events = run_until(sa, lambda ev: any(e.type is EventType.START for e in ev), 20)
        time.sleep(0.3)  # the server binds its port right after START
        sb.start(client_set)
        client_events = run_until(sb, lambda _: sb.finished(), 60)
        sa.stop()  # the server gets SIGTERM and reports its final statistics
        server_events += run_until(sa, lambda ev: any(e.is_exit for e in ev), 20)

    fixed, uniform = exit_stats(client_events, 1), exit_stats(client_events, 2)
    for stats, cfg in ((fixed, FIXED), (uniform, UNIFORM)):
        assert stats["messages"] > 0 and stats["errors"] == 0, stats
        assert stats["bytes_received"] == stats["bytes_sent"] > 0  # echo
        lat = stats["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        # the seeded draws replayed: bytes sent = sum of the sizes of the messages sent
        replay = client_config({"servers": servers, **cfg})
        sizes = [size for _, size, _ in islice(draws(replay), stats["messages"])]
        assert stats["bytes_sent"] == sum(sizes)
        assert stats["elapsed_s"] >= CLIENT_SECONDS - 0.5
    assert fixed["bytes_sent"] == fixed["messages"] * 700
    assert stat_notices(client_events, 1), "no periodic stats events"
    assert [e.type for e in client_events if e.task_id == 1 and e.is_exit] == [EventType.EXIT]

    server = exit_stats(server_events, 1)
    (server_exit,) = [e for e in server_events if e.is_exit]
    assert server_exit.type is EventType.EXIT_EXTERNAL
    assert server["messages"] == fixed["messages"] + uniform["messages"]
    assert server["bytes_received"] == fixed["bytes_sent"] + uniform["bytes_sent"]
    assert server["bytes_sent"] == server["bytes_received"]
    assert server["connections"] == 2 and server["errors"] == 0


def test_one_machine_traffic_set_sink(agent: AgentProcess) -> None:
    port = free_port()
    taskset = TrafficTaskSet(port=port, duration=1.0, mode="sink", size=256)
    concrete = next(taskset.variants())
    with session_for(agent) as session:
        session.start(concrete)
        events = run_until(session, lambda _: session.finished(), 30)
    server, client = exit_stats(events, 1), exit_stats(events, 2)
    assert client["messages"] > 0 and client["errors"] == 0
    assert client["bytes_sent"] == client["messages"] * 256
    assert client["bytes_received"] == 0  # sink: acknowledged, not echoed
    assert server["messages"] == client["messages"]
    assert server["bytes_received"] == client["bytes_sent"] and server["bytes_sent"] == 0


def test_bad_traffic_config_refused_before_start(agent: AgentProcess) -> None:
    client = agent.connect()
    bad = {"id": 1, "pkg": "traffic_client", "config": {"servers": "127.0.0.1:1", "size": "zipf:2"}}
    reply = client.request("start", tasks=[bad])
    assert not reply["ok"] and reply["error"]["code"] == "invalid_taskset"
    assert "config.size" in reply["error"]["message"]
