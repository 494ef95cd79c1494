"""Fixtures for process tests: real ``python -m farm.agent`` subprocesses on loopback.

For other engineers' tests (sessions, distributor, netjobs):

* ``agent`` -> :class:`AgentProcess` of a fresh agent on 127.0.0.1 with a
  random token: ``.host``, ``.port``, ``.token``, ``.proc`` (Popen),
  ``.address`` ("host:port"), ``.log`` (its stderr file), ``.connect()`` -> a
  raw authenticated :class:`AgentClient`. Torn down after the test: SIGTERM,
  wait, and an assertion that the agent exited with 0 and left no process
  behind (its job processes included).
* ``agent_factory(*extra_args, token=None, env=None, token_flag=True)``
  starts more agents (e.g. with ``"--heartbeat", "0.2"``), all torn down the
  same way. ``start_agent``/``stop_agent`` do the same outside fixtures.

:class:`AgentClient` is a deliberately small, independent client (socket +
``protocol.client_handshake``) so agent tests do not depend on the host-side
session code: ``call(op, **args)`` returns the result or raises
:class:`ReplyError`; events that arrive meanwhile are kept in ``events``;
``run_taskset(tasks)`` starts a set and collects events until every task sent
JOBS_DONE.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from farm.agent import protocol

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


class ReplyError(Exception):
    """The agent answered a request with ok=false."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class AgentClient:
    """Raw test client of the farm agent protocol (one authenticated socket)."""

    sock: socket.socket
    hello: dict[str, Any]
    channel: protocol.Channel | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def send(self, message: dict[str, Any]) -> None:
        assert self.channel is not None
        self.channel.send(message)

    def send_raw(self, message: dict[str, Any]) -> None:
        """An unsealed frame (what a client without the session key would send)."""
        protocol.write_frame(self.sock, message)

    def read(self, timeout: float = 10.0) -> dict[str, Any]:
        """Next frame of any type (raises TimeoutError)."""
        assert self.channel is not None
        self.sock.settimeout(timeout)
        return self.channel.recv()

    def _absorb(self, frame: dict[str, Any]) -> bool:
        """Keep events/heartbeats; True if the frame was one of those."""
        if frame.get("type") == "event":
            self.events.append(frame["event"])
            return True
        if frame.get("type") == "heartbeat":
            self.heartbeats += 1
            return True
        return False

    def request(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        """Send a request and return its reply frame (ok or not)."""
        rid = next(self._ids)
        self.send({"type": "request", "id": rid, "op": op, "args": args})
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read(max(0.01, deadline - time.monotonic()))
            if self._absorb(frame):
                continue
            if frame.get("type") == "reply" and frame.get("id") == rid:
                return frame
            raise AssertionError(f"unexpected frame while waiting for reply {rid}: {frame}")

    def call(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        """Request and return the result; raise ReplyError on an error reply."""
        reply = self.request(op, timeout, **args)
        if not reply["ok"]:
            raise ReplyError(reply["error"]["code"], reply["error"]["message"])
        return reply["result"]

    def collect(
        self, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Read frames until ``until(self.events)`` holds; return all events so far."""
        deadline = time.monotonic() + timeout
        while not until(self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met in {timeout} s; events: {self.events}")
            frame = self.read(remaining)
            if not self._absorb(frame):
                raise AssertionError(f"unexpected frame: {frame}")
        return self.events

    def wait_done(self, task_ids: list[int], timeout: float = 30.0) -> list[dict[str, Any]]:
        """Collect until every task in ``task_ids`` sent JOBS_DONE."""

        def done(events: list[dict[str, Any]]) -> bool:
            finished = {e["task_id"] for e in events if e["type"] == "JOBS_DONE"}
            return set(task_ids) <= finished

        return self.collect(done, timeout)

    def run_taskset(
        self, tasks: list[dict[str, Any]], timeout: float = 30.0, **start_args: Any
    ) -> list[dict[str, Any]]:
        """Start ``tasks`` and return the events once every task is done."""
        self.call("start", tasks=tasks, **start_args)
        return self.wait_done([t["id"] for t in tasks], timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class AgentProcess:
    """A running ``python -m farm.agent`` subprocess."""

    host: str
    port: int
    token: str
    proc: subprocess.Popen[bytes]
    log: Path
    stdout: Path
    clients: list[AgentClient] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def raw_socket(self, timeout: float = 10.0) -> socket.socket:
        """A plain TCP connection (no handshake)."""
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def connect(self, token: str | None = None, timeout: float = 10.0) -> AgentClient:
        """An authenticated client (closed at teardown)."""
        sock = self.raw_socket(timeout)
        try:
            channel = protocol.client_handshake(sock, self.token if token is None else token)
        except BaseException:
            sock.close()
            raise
        client = AgentClient(sock, channel.hello, channel)
        self.clients.append(client)
        return client

    def children(self) -> list[psutil.Process]:
        """Live (non-zombie) descendants of the agent."""
        try:
            procs = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        alive = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        return alive

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _wait_port(port_file: Path, proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if port_file.exists():
            text = port_file.read_text().strip()
            if text:
                return int(text)
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}: {log.read_text()}")
        time.sleep(0.02)
    raise TimeoutError(f"agent did not listen within {START_TIMEOUT} s: {log.read_text()}")


def start_agent(
    workdir: Path,
    *extra_args: str,
    token: str | None = None,
    env: dict[str, str] | None = None,
    token_flag: bool = True,
) -> AgentProcess:
    """Start an agent on 127.0.0.1 with a free port; wait (bounded) until it listens.

    ``token_flag=False`` leaves ``--token`` out (give the token via ``env`` or
    ``--token-file`` in ``extra_args``; ``token`` is then only recorded). Jobs run in
    ``workdir/work`` unless ``extra_args`` name a ``--workdir``: an agent a test kills
    cannot remove a private /tmp/farm-agent-* directory, and every one was left behind.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    token = token or secrets.token_hex(16)
    port_file = workdir / "agent.port"
    port_file.unlink(missing_ok=True)  # never read a stale port
    log, out = workdir / "agent.log", workdir / "agent.out"
    argv = [sys.executable, "-m", "farm.agent", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--port-file", str(port_file), "--log-level", "DEBUG"]
    if token_flag:
        argv += ["--token", token]
    if "--workdir" not in extra_args:
        argv += ["--workdir", str(workdir / "work")]
    with log.open("wb") as err_fh, out.open("wb") as out_fh:
        proc = subprocess.Popen(
            [*argv, *extra_args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out_fh,
            stderr=err_fh,
            env={**os.environ, **(env or {})},
        )
    try:
        port = _wait_port(port_file, proc, log)
    except BaseException:
        proc.kill()
        proc.wait(STOP_TIMEOUT)
        raise
    return AgentProcess("127.0.0.1", port, token, proc, log, out)


def stop_agent(agent: AgentProcess) -> None:
    """SIGTERM, wait, and assert the agent and everything it started are gone."""
    for client in agent.clients:
        client.close()
    descendants = agent.children()
    already_dead = agent.proc.poll() is not None
    if not already_dead:
        agent.proc.send_signal(signal.SIGTERM)
    try:
        code = agent.proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        agent.proc.kill()
        agent.proc.wait(STOP_TIMEOUT)
        raise AssertionError(f"agent ignored SIGTERM: {agent.log_text()[-3000:]}") from None
    finally:
        for p in descendants:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    assert agent.proc.poll() is not None
    if not already_dead:
        assert code == 0, f"agent exited with {code}: {agent.log_text()[-3000:]}"
    left = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"agent left processes behind: {left}"


@pytest.fixture(autouse=True, scope="session")
def _native_workloads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Agents (and local backends) run the built-ins as farm-workload, compiled once here.

    Without it they would fall back to Python and announce it with a set-level NOTICE.
    """
    from farm.agent.commands import NATIVE_ENV
    from farm.image.native import build_native

    binary, _key = build_native(tmp_path_factory.mktemp("native"))
    old = os.environ.get(NATIVE_ENV)
    os.environ[NATIVE_ENV] = str(binary)
    yield str(binary)
    if old is None:
        os.environ.pop(NATIVE_ENV, None)
    else:
        os.environ[NATIVE_ENV] = old


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Start agents with extra command-line arguments; all are stopped at teardown."""
    started: list[AgentProcess] = []
    counter = itertools.count()

    def factory(
        *extra_args: str,
        token: str | None = None,
        env: dict[str, str] | None = None,
        token_flag: bool = True,
    ) -> AgentProcess:
        workdir = tmp_path / f"agent{next(counter)}"
        agent = start_agent(workdir, *extra_args, token=token, env=env, token_flag=token_flag)
        started.append(agent)
        return agent

    try:
        yield factory
    finally:
        errors = []
        for agent in started:
            try:
                stop_agent(agent)
            except AssertionError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def agent(agent_factory: Callable[..., AgentProcess]) -> AgentProcess:
    """A fresh agent on 127.0.0.1 with a random token (stopped and checked at teardown)."""
    return agent_factory()


@pytest.fixture
def client(agent: AgentProcess) -> AgentClient:
    """An authenticated raw client of the ``agent`` fixture."""
    return agent.connect()
