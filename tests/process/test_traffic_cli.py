"""``python -m farm.agent.traffic``: server and client processes on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.process.conftest import REPO

TRAFFIC = [sys.executable, "-m", "farm.agent.traffic"]


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """An echo server on 127.0.0.1 (free port, read from its stderr); SIGTERM'ed at the end."""
    proc = subprocess.Popen(
        [*TRAFFIC, "server", "--host", "127.0.0.1", "--port", "0", "--stats-interval", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "listening on 127.0.0.1:" in first, first
        yield proc, int(first.rsplit(":", 1)[1])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRAFFIC, "client", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_cli_client_and_server(server: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = server
    done = client(
        "--servers", f"127.0.0.1:{port}", "--size", "fixed:1000", "--think", "exp:0.002",
        "--duration", "2", "--seed", "1", "--stats-interval", "0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = lines(done.stdout)
    assert all(o["traffic"] == "client" for o in out)
    assert [o["final"] for o in out][-1] is True and len(out) >= 3  # periodic + final
    final = out[-1]
    assert final["messages"] > 0 and final["errors"] == 0
    assert final["bytes_sent"] == final["messages"] * 1000 == final["bytes_received"]
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    (srv,) = lines(stdout)
    assert srv["final"] and srv["messages"] == final["messages"]
    assert srv["bytes_received"] == srv["bytes_sent"] == final["bytes_sent"]


def test_cli_cidr_pool_counts_refusals(server: tuple[subprocess.Popen[str], int]) -> None:
    _, port = server  # listens on 127.0.0.1 only: 127.0.0.2 of the /30 refuses
    done = client(
        "--cidr", "127.0.0.0/30", "--port", str(port), "--size", "exp:300", "--think", "0",
        "--count", "200", "--seed", "7", "--stats-interval", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (final,) = lines(done.stdout)
    assert final["messages"] + final["errors"] == 200
    assert final["messages"] > 0 and final["errors"] > 0
    assert set(final["error_kinds"]) == {"ConnectionRefusedError"}
    assert set(final["per_destination"]) == {f"127.0.0.1:{port}"}
    assert final["bytes_received"] == final["bytes_sent"]


def test_cli_bad_config_exits_2() -> None:
    done = client("--servers", "127.0.0.1:9", "--size", "uniform:10-1", "--duration", "1")
    assert done.returncode == 2
    assert "config.size" in done.stderr and "above max" in done.stderr
    assert done.stdout == ""
