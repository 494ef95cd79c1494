"""farm.compat.seer: SEER's agent base and AddressPool over farm's traffic workloads."""

from __future__ import annotations

import random
from typing import Any

import pytest

from farm.compat.seer import AddressPool, Agent, TrafficAgent
from farm.errors import ConfigError
from tests.helpers import free_port, wait_for


def test_address_pool_constructor_and_random() -> None:
    pool = AddressPool("me", {"me": "10.0.0.0/30", "b": ["10.1.0.0/30"]}, rng=random.Random(1))
    assert all(pool.random() in {"10.1.0.1", "10.1.0.2"} for _ in range(20))
    assert pool.RandomNode() == "b"
    other = AddressPool(fakelist=[("x", "192.168.0.0/29")])
    assert other.random().startswith("192.168.0.")
    other.Set("y", ["172.16.0.0/30"])
    assert other.nodes() == ["x", "y"]


class Recording(Agent):
    def __init__(self, nodename: str) -> None:
        super().__init__(nodename)
        self.calls: list[Any] = []

    def serverExec(self) -> None:
        self.calls.append("serverExec")

    def serverStop(self) -> None:
        self.calls.append("serverStop")

    def clientInit(self) -> None:
        self.calls.append("clientInit")

    def clientExec(self, src: str, dst: str, size: int) -> None:
        self.calls.append((src, dst, size))


def test_tg_hooks_run_in_seer_order() -> None:
    agent = Recording("c")
    agent.processArgs({"clients": ["c"], "servers": "s", "think": 0.01, "sizes": [10, 20]})
    agent.nodetable["addresses"] = {"c": "10.0.0.1/32", "s": "10.0.0.2/32"}
    agent.TGStart()
    wait_for("three client steps", lambda: len(agent.calls) >= 4, timeout=10)
    agent.TGStop()
    assert agent.calls[0] == "clientInit"
    src, dst, size = agent.calls[1]
    assert (src, dst) == ("10.0.0.1", "10.0.0.2") and size in (10, 20)
    assert "serverExec" not in agent.calls


def test_process_args_checks_values() -> None:
    with pytest.raises(ConfigError, match="think"):
        Agent("a").processArgs({"think": "soon"})
    with pytest.raises(ConfigError, match="sizes"):
        Agent("a").processArgs({"sizes": []})


def test_traffic_agent_sends_over_farm_traffic_server() -> None:
    port = free_port()
    args = {"clients": ["c"], "servers": ["s"], "think": 0.0, "sizes": [100]}
    server, client = TrafficAgent("s", port), TrafficAgent("c", port)
    for agent in (server, client):
        agent.processArgs(args)
        agent.nodetable["addresses"] = {"c": "127.0.0.1/32", "s": "127.0.0.1/32"}
    server.TGStart()
    try:
        client.TGStart()
        wait_for("bytes echoed", lambda: client.sent >= 1000, timeout=20)
        client.TGStop()
    finally:
        server.TGStop()
    assert client.sent % 100 == 0
    assert server.server_stats is not None
