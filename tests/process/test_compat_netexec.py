"""A NetJobs command with a NUL on a real agent: refused at once, the agent keeps serving."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from farm.config import FarmConfig
from farm.errors import ConfigError
from farm.netjobs import run_config

from .conftest import AgentProcess, ReplyError

pytestmark = pytest.mark.process

TOKEN = "compat-netexec-token"


def test_exec_refuses_a_nul_and_serves_the_next_command(agent: AgentProcess) -> None:
    client = agent.connect()
    with pytest.raises(ReplyError) as info:
        client.call("exec", command="echo a\0b")
    assert info.value.code == "bad_request" and "NUL" in str(info.value)
    rid = client.call("exec", command="echo fine")["id"]
    for _ in range(60):
        reply = client.call("exec_poll", id=rid, offset=0, wait=1.0)
        if reply["eof"]:
            break
    assert reply["state"] == "exited" and reply["exit_code"] == 0
    assert agent.children() == []


def test_netjobs_config_with_a_nul_command_is_refused_before_anything_runs(
    agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    target = agent_factory(token=TOKEN)
    config = tmp_path / "nul.cfg"
    config.write_text(f'bad:\n127.0.0.1:{target.port}: "echo a\0b"\n-timeout: 5s\nend\n')
    with pytest.raises(ConfigError, match="NUL"):
        run_config(config, token=TOKEN, farm_config=FarmConfig(state_dir=tmp_path / "st"))
    assert target.children() == []
