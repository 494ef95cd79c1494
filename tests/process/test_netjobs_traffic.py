"""Traffic generation driven by NetJobs: a server on one agent, a client on another."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from farm.config import FarmConfig
from farm.netjobs import Status, run_config
from tests.helpers import free_port

from .conftest import AgentProcess

TOKEN = "netjobs-traffic-token"


def _final(output: str) -> dict[str, object]:
    """The last statistics line a traffic process printed (its final numbers)."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith('{"traffic"')]
    assert lines and lines[-1]["final"] is True, output
    return lines[-1]


def test_netjobs_starts_a_traffic_server_and_client_together(
    agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    a, b = agent_factory(token=TOKEN), agent_factory(token=TOKEN)
    port = free_port()
    traffic = f"{sys.executable} -m farm.agent.traffic"
    config = tmp_path / "traffic.cfg"
    config.write_text(
        "# one echo server, one client sending 500-byte messages for 2 s\n"
        "traffic:\n"
        "-generaltimeout: 30s\n"
        f'127.0.0.1:{a.port}: "{traffic} server --port {port} --duration 4"\n'
        f'127.0.0.1:{b.port}: "sleep 0.5; {traffic} client --servers 127.0.0.1:{port}'
        ' --size fixed:500 --think fixed:0.005 --duration 2 --seed 3"\n'
        "end\n"
    )
    (result,) = run_config(config, token=TOKEN, farm_config=FarmConfig(state_dir=tmp_path / "s"))
    assert [r.status for r in result.results] == [Status.SUCCESS, Status.SUCCESS], result
    server, client = (_final(r.output) for r in result.results)
    assert client["errors"] == 0 and isinstance(client["messages"], int) and client["messages"] > 0
    assert client["bytes_sent"] == client["messages"] * 500 == client["bytes_received"]
    assert server["messages"] == client["messages"]
    assert server["bytes_received"] == client["bytes_sent"]
