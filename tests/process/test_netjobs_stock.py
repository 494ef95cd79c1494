"""``farm netjobs`` against stock NetJobsAgent.py hosts: a fake of its text protocol on
loopback, written from the public description (TheOtherOtherOperation/NetJobs README and
NetJobsAgent): TCP, setup strings echoed, ``// READY //``, ``// START //``,
``// KILL //``, ``NAME<TAB>COMMAND<TAB>STATUS<TAB>OUTPUT`` per command, ``// DONE //``."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.cli.root import main as cli_main
from farm.config import FarmConfig
from farm.netjobs import Status, run_config
from farm.netjobs.grammar import NetJobsConfig, TestBlock, parse_text


class FakeNetJobsAgent:
    """One stock agent: one connection at a time, commands run with the shell."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(0.1)  # accept() wakes up to notice close()
        self.received: list[str] = []
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.closing = True
        self.thread.join(10)
        self.listener.close()

    def _serve(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with conn:
                try:
                    self._session(conn)
                except OSError:
                    pass

    def _session(self, conn: socket.socket) -> None:
        name, commands, timeouts = "", [], []
        reader = conn.makefile("rb")
        while True:  # setup: every string echoed
            line = reader.readline()
            if not line:
                return
            conn.sendall(line)
            text = line.decode().rstrip("\n")
            self.received.append(text)
            if text == "// READY //":
                break
            key, _, value = text.partition("\t")
            if key == "name":
                name = value
            elif key == "command":
                commands.append(value)
            elif key == "timeout":
                timeouts.append(int(value) or None)
        line = reader.readline().decode().rstrip("\n")
        self.received.append(line)
        if line == "// KILL //":
            conn.sendall(b"// DONE //\n")
            return
        assert line == "// START //"
        procs = [
            subprocess.Popen(
                c,
                shell=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            for c in commands
        ]
        killed = threading.Event()

        def listen() -> None:
            more = reader.readline().decode().rstrip("\n")
            if more == "// KILL //":
                self.received.append(more)
                killed.set()

        threading.Thread(target=listen, daemon=True).start()
        began = time.monotonic()
        for command, timeout, proc in zip(commands, timeouts, procs, strict=True):
            status = None
            while proc.poll() is None:
                if killed.is_set():
                    status = "KILLED"
                elif timeout is not None and time.monotonic() - began > timeout:
                    status = "TIMEOUT"
                if status:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait()
                    break
                time.sleep(0.02)
            if status:
                result = f"{name}\t{command}\t{status}\t"
                conn.sendall((result + "\n").encode())
                continue
            out, err = proc.communicate()
            if proc.returncode > 0 or err:
                result = f"{name}\t{command}\tERROR\t{err.decode()}"
            else:
                result = f"{name}\t{command}\tSUCCESS\t{out.decode()}"
            conn.sendall((result + "\n").encode())
        conn.sendall(b"// DONE //\n")


@pytest.fixture
def agents() -> Iterator[list[FakeNetJobsAgent]]:
    made = [FakeNetJobsAgent(), FakeNetJobsAgent()]
    try:
        yield made
    finally:
        for agent in made:
            agent.close()


def config(agents: list[FakeNetJobsAgent], body: str) -> str:
    return body.format(a=f"127.0.0.1:{agents[0].port}", b=f"127.0.0.1:{agents[1].port}")


def test_stock_agents_run_a_test_and_warn(
    agents: list[FakeNetJobsAgent], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = config(
        agents,
        'test0:\n-agent: netjobs\n{a}: "echo hello; echo world"\n-timeout: 10s\n'
        '{b}: "echo other"\nend\n',
    )
    parsed = parse_text(text)
    with caplog.at_level(logging.WARNING, logger="farm.netjobs"):
        results = run_config(
            parsed_config(parsed, tmp_path), farm_config=FarmConfig(state_dir=tmp_path)
        )
    (result,) = results
    assert result.passed, result
    first, second = result.results
    assert (first.status, first.exit_code, first.output) == (Status.SUCCESS, 0, "hello\nworld\n")
    assert (second.status, second.output) == (Status.SUCCESS, "other\n")
    assert agents[0].received[:4] == [
        f"name\t127.0.0.1:{agents[0].port}",
        "command\techo hello; echo world",
        "timeout\t10",
        "// READY //",
    ]
    assert agents[1].received[2] == "timeout\t0"  # none
    assert "UNAUTHENTICATED" in caplog.text


def parsed_config(tests: tuple[TestBlock, ...], tmp_path: Path) -> NetJobsConfig:
    return NetJobsConfig(None, tests)


def test_error_timeout_and_kill_on_minhosts(agents: list[FakeNetJobsAgent], tmp_path: Path) -> None:
    text = config(
        agents,
        'fails:\n-minhosts: 0\n{a}: "echo bad >&2; exit 3"\n-agent: netjobs\nend\n'
        'slow:\n-agent: netjobs\n{a}: "sleep 30"\n-timeout: 1s\n{b}: "sleep 30"\nend\n',
    )
    results = run_config(
        parsed_config(parse_text(text), tmp_path), farm_config=FarmConfig(state_dir=tmp_path)
    )
    fails, slow = results
    (res,) = fails.results
    assert (res.status, res.exit_code, res.output) == (Status.ERROR, 1, "bad\n")
    assert not slow.passed
    statuses = sorted(r.status for r in slow.results)
    assert statuses == sorted([Status.TIMEOUT, Status.KILLED])
    assert "// KILL //" in agents[1].received


def test_farm_netjobs_cli_with_agent_option(agents: list[FakeNetJobsAgent], tmp_path: Path) -> None:
    path = tmp_path / "stock.cfg"
    path.write_text(config(agents, 'test0:\n{a}: "echo via-cli"\nend\n'))
    (tmp_path / "farm.toml").write_text(f'state_dir = "{tmp_path / "state"}"\n')
    runner = CliRunner()
    result = runner.invoke(
        cli_main,
        ["--config", str(tmp_path / "farm.toml"), "netjobs", "--agent", "netjobs", "-l", str(path)],
    )
    assert result.exit_code == 0, result.output
    assert "via-cli" in result.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("stock") and p != path]


def test_nul_in_a_command_is_a_clear_error(tmp_path: Path) -> None:
    from farm.errors import ConfigError

    with pytest.raises(ConfigError, match="NUL"):
        parse_text('t:\n127.0.0.1: "echo a\0b"\nend\n')
