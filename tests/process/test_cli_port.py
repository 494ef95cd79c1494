"""``farm run TASKSET DEST --port P`` on existing agents on loopback (no agent_port in config)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .conftest import REPO, AgentProcess
from .test_hosts import agent_on, free_port


def test_port_option_reaches_agents_given_without_port(
    tmp_path: Path, agent_factory: Callable[..., AgentProcess]
) -> None:
    port, token = free_port(), secrets.token_hex(16)
    agent_on(agent_factory, "127.0.0.2", port, token)
    agent_on(agent_factory, "127.0.0.3", port, token)
    (tmp_path / "farm.toml").write_text("heartbeat_timeout = 3.0\nboot_timeout = 20.0\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "FARM_TOKEN": token}
    argv = [sys.executable, "-m", "farm.cli", "run", "example.VariantsTaskSet"]
    proc = subprocess.run(
        [*argv, "127.0.0.2", "127.0.0.3", "--port", str(port), "--machines", "2", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["job"]["finished"] == 4 and summary["machines"] == 2
    log = (tmp_path / "log" / "distributor.log").read_text()
    assert f"127.0.0.2:{port}" in log and f"127.0.0.3:{port}" in log

    bad = subprocess.run(
        [*argv, "127.0.0.2", "--port", "0"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "agent_port" in bad.stderr
