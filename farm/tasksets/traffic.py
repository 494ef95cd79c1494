"""Traffic-generation task sets (seed 002): pkgs ``traffic_server`` and ``traffic_client``.

Config keys, distributions and the statistics events are described in
docs/traffic.md. In a task config write several servers or ranges as one
comma-separated string: a list would be a dimension of variation.
"""

from __future__ import annotations

from typing import Any

from farm.taskset import Task, TaskSet

DEFAULT_PORT = 5001


def server_task(
    port: int = DEFAULT_PORT, mode: str = "echo", duration: float = 0.0, **config: Any
) -> Task:
    """A ``traffic_server`` task (``duration`` 0: serves until its set is stopped)."""
    cfg = {"port": port, "mode": mode, "duration": duration, **config}
    return Task({"pkg": "traffic_server", "config": cfg})


def client_task(
    servers: str | None = None,
    *,
    cidr: str | None = None,
    port: int | None = None,
    size: str | float | list[str] = "uniform:100-1000",
    think: str | float | list[str] = "exp:0.01",
    duration: float = 5.0,
    seed: int | None = 1,
    **config: Any,
) -> Task:
    """A ``traffic_client`` task sending to ``servers`` ("h:p,...") or hosts of ``cidr``."""
    cfg: dict[str, Any] = {"size": size, "think": think, "duration": duration, **config}
    for key, value in (("servers", servers), ("cidr", cidr), ("port", port), ("seed", seed)):
        if value is not None:
            cfg[key] = value
    return Task({"pkg": "traffic_client", "config": cfg})


class TrafficTaskSet(TaskSet):
    """An echo server and a client on one machine (loopback), 5 s of uniform traffic: 1 variant.

    The server serves 2 s longer than the client runs and the client starts
    after 0.5 s, so every client message finds the server.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        duration: float = 5.0,
        mode: str = "echo",
        size: str | float = "uniform:100-1000",
        think: str | float = "exp:0.01",
        seed: int | None = 1,
    ) -> None:
        super().__init__()
        self.append(server_task(port, mode, duration + 2.0))
        client = client_task(
            f"127.0.0.1:{port}", size=size, think=think, duration=duration, seed=seed
        )
        client["offset"] = 500
        self.append(client)


class TrafficServerTaskSet(TaskSet):
    """One traffic server (echo, port 5001) that serves until its set is stopped: 1 variant."""

    until_stopped = True  # never ends by itself: `farm run` refuses it (a library building block)

    def __init__(self, port: int = DEFAULT_PORT, mode: str = "echo", duration: float = 0.0) -> None:
        super().__init__()
        self.append(server_task(port, mode, duration))


class TrafficClientTaskSet(TaskSet):
    """One traffic client (5 s, uniform 100-1000 B, exp 10 ms think) to given servers: 1 variant."""

    def __init__(
        self,
        servers: str | None = f"127.0.0.1:{DEFAULT_PORT}",
        *,
        cidr: str | None = None,
        port: int | None = None,
        size: str | float = "uniform:100-1000",
        think: str | float = "exp:0.01",
        duration: float = 5.0,
        seed: int | None = 1,
    ) -> None:
        super().__init__()
        if cidr is not None:
            servers = None
        self.append(
            client_task(
                servers, cidr=cidr, port=port, size=size, think=think, duration=duration, seed=seed
            )
        )


class TrafficSizesTaskSet(TaskSet):
    """Echo server + client on loopback; message size fixed, uniform, exp or pareto: 4 variants."""

    def __init__(self, port: int = DEFAULT_PORT, duration: float = 2.0) -> None:
        super().__init__()
        self.append(server_task(port, "echo", duration + 2.0))
        sizes = ["fixed:512", "uniform:100-1000", "exp:500", "pareto:1.5,200"]
        client = client_task(f"127.0.0.1:{port}", size=sizes, duration=duration)
        client["offset"] = 500
        self.append(client)
