"""Issue 15 on real agent processes: no secret leaks, relays and strangers get nowhere.

* while a local-backend farm runs, ``ps -eo args``, the agents' environments and
  every file under the log and state dirs hold neither the token nor a guest key;
* a relaying fake agent that forwarded a real handshake gets no request of its
  own through (the agent reports the failed MAC, the host the failed session);
* sealed frames that are forged, replayed or reordered are refused;
* 70 idle strangers do not keep an honest client out;
* a byte-trickling impostor is cut at the host's deadline.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from farm import Distributor
from farm.agent import protocol
from farm.config import FarmConfig
from farm.errors import AgentError, AuthError, SessionError
from farm.session import FarmSession
from farm.session.base import Unreachable
from farm.session.wire import handshake
from farm.tasksets.example import Hey0TaskSet
from tests.helpers import farm_agents, wait_for
from tests.process.conftest import AgentProcess

TOKEN = "f" * 8 + os.urandom(16).hex()


def secret_hits(dirs: Iterable[Path], secrets: list[str]) -> list[str]:
    """Where any of ``secrets`` appears: ``ps -eo args`` and every file under ``dirs``."""
    hits = []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    hits += [f"ps: {s[:8]}..." for s in secrets if s in ps]
    for top in dirs:
        # os.walk, not rglob: job directories come and go while it runs (walk skips them)
        paths = [Path(d, f) for d, _, files in os.walk(top) for f in files]
        for path in paths:
            with contextlib.suppress(OSError):  # a file gone since the walk saw it
                if not path.is_file() or path.is_symlink() or stat.S_ISSOCK(path.stat().st_mode):
                    continue
                data = path.read_bytes()
                hits += [f"{path}: {s[:8]}..." for s in secrets if s.encode() in data]
    return hits


def test_local_farm_leaks_no_token_or_key(tmp_path: Path) -> None:
    cfg = FarmConfig(
        backend="local",
        state_dir=tmp_path / "state",
        log_dir=tmp_path / "log",
        token=TOKEN,
        heartbeat=0.2,
        idle_linger=30.0,
        log_file=True,
    )
    dist = Distributor(cfg)
    try:
        dist.set_max_machine_value(2)
        dist.add_job(Hey0TaskSet())
        assert dist.wait_finished(timeout=60)
        agents = farm_agents(tmp_path)
        assert agents, "no agent running while the farm idles"
        names = [a.cmdline()[a.cmdline().index("--guest") + 1] for a in agents]
        keys = [protocol.guest_key(TOKEN, name) for name in names]
        assert secret_hits([tmp_path], [TOKEN, *keys]) == []
        for agent in agents:  # the start-up environment of each agent (what jobs could read)
            environ = Path(f"/proc/{agent.pid}/environ").read_bytes()
            assert not any(s.encode() in environ for s in [TOKEN, *keys])
        for directory in (cfg.state_dir, cfg.log_dir):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE((cfg.log_dir / "distributor.log").stat().st_mode) == 0o600
    finally:
        dist.close()


def test_one_guests_key_opens_no_other_guest(agent_factory: Any) -> None:
    key = protocol.guest_key(TOKEN, "guest-a")
    agent_a = agent_factory("--guest", "guest-a", token=key)
    with FarmSession(agent_a.host, agent_a.port, token=TOKEN) as session:  # derives guest-a's key
        assert session.ping() >= 0
    with pytest.raises(AuthError, match="expected guest 'guest-b'"):
        FarmSession(
            agent_a.host, agent_a.port, token=TOKEN, guest="guest-b", connect_deadline=5
        ).connect()
    # guest-b's key (all a compromised guest-b holds) opens nothing on guest-a
    with pytest.raises(PermissionError):
        agent_a.connect(token=protocol.guest_key(TOKEN, "guest-b"))


class Relay:
    """A fake agent: forwards a real agent's handshake, then injects its own request."""

    def __init__(self, target: AgentProcess, inject: bool = True) -> None:
        self.target = target
        self.inject = inject
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.agent_said = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        host, _ = self.listener.accept()
        agent = socket.create_connection((self.target.host, self.target.port), timeout=10)
        with host, agent:
            for src, dst in ((agent, host), (host, agent), (agent, host)):  # hello, auth, welcome
                dst.sendall(frame_bytes(src))
            if self.inject:  # the attack: a request of our own on the authenticated connection
                forged = {"type": "request", "id": 666, "op": "exec", "args": {"command": "id"}}
                agent.sendall(protocol.Tagger(os.urandom(32), "client->agent").seal(
                    protocol.encode(forged)[4:]
                ))  # fmt: skip
            agent.settimeout(10)
            with contextlib.suppress(OSError):
                while data := agent.recv(65536):
                    self.agent_said += data
                    host.sendall(data)  # whatever the agent answers: only it can seal it


def frame_bytes(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    header = protocol.recv_exact(sock, 4)
    return header + protocol.recv_exact(sock, int.from_bytes(header, "big"))


def test_relay_gets_no_request_through(agent: AgentProcess) -> None:
    relay = Relay(agent)
    session = FarmSession("127.0.0.1", relay.port, token=agent.token, connect_deadline=10)
    with session:
        session.connect()  # the relay forwarded a genuine handshake...
        with pytest.raises((AgentError, SessionError)) as info:  # ...but the session is dead
            session.call("status", timeout=10)
        assert "failed its MAC" in str(info.value)
    wait_for(
        "the agent's log of the forged frame", lambda: "failed its MAC" in agent.log_text(), 10
    )
    relay.thread.join(15)
    assert b"uid=" not in relay.agent_said  # `id` never ran
    assert b'"id":666' not in relay.agent_said  # no reply at all to the forged request


def test_forged_replayed_and_reordered_frames_are_refused(agent: AgentProcess) -> None:
    for attack in ("replay", "reorder", "forge"):
        client = agent.connect()
        assert client.channel is not None
        first = client.channel.encode({"type": "request", "id": 1, "op": "ping"})
        second = client.channel.encode({"type": "request", "id": 2, "op": "ping"})
        if attack == "replay":
            client.sock.sendall(first + first)
        elif attack == "reorder":
            client.sock.sendall(second + first)
        else:
            client.sock.sendall(first[:-1] + bytes([first[-1] ^ 1]))
        answers = read_until_closed(client)
        errors = [a for a in answers if a["type"] == "error"]
        assert [e["code"] for e in errors] == ["auth"], (attack, answers)
        if attack == "replay":  # the genuine frame was served, its copy was not
            assert [a["id"] for a in answers if a["type"] == "reply"] == [1]
        else:
            assert not [a for a in answers if a["type"] == "reply"], (attack, answers)
    assert "ts" in agent.connect().call("ping")


def read_until_closed(client: Any) -> list[dict[str, Any]]:
    out = []
    with contextlib.suppress(OSError, protocol.ProtocolViolation):
        while True:
            frame = client.read(timeout=10)
            if frame["type"] != "heartbeat":
                out.append(frame)
    return out


def test_70_idle_strangers_do_not_keep_an_honest_client_out(agent: AgentProcess) -> None:
    strangers = [agent.raw_socket() for _ in range(70)]
    try:
        session = FarmSession(agent.host, agent.port, token=agent.token, connect_deadline=20)
        with session:
            assert session.ping() >= 0
        assert "ts" in agent.connect().call("ping")
    finally:
        for sock in strangers:
            sock.close()


@contextlib.contextmanager
def trickler(payload: bytes, pause: float = 0.3) -> Iterator[int]:
    """An impostor that sends ``payload`` one byte per ``pause`` seconds to each client."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                for byte in payload:
                    if stop.wait(pause):
                        return
                    with contextlib.suppress(OSError):
                        conn.sendall(bytes([byte]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_trickling_impostor_is_cut_at_the_deadline() -> None:
    hello = protocol.encode(protocol.hello(protocol.new_nonce(), 1.0, "x"))  # ~60 s at 0.3 s/byte
    with trickler(hello) as port:
        began = time.monotonic()
        assert not FarmSession.is_available("127.0.0.1", port, timeout=1.0)
        with pytest.raises(Unreachable):
            handshake("127.0.0.1", port, TOKEN, timeout=1.0)
        assert time.monotonic() - began < 15  # generous: without a deadline, 2 x 60 s
    big = (protocol.PREAUTH_MAX_FRAME + 1).to_bytes(4, "big")
    with trickler(big, pause=0.0) as port:
        assert not FarmSession.is_available("127.0.0.1", port, timeout=5.0)


def test_busy_agent_is_retried_not_fatal(agent_factory: Any) -> None:
    agent = agent_factory("--max-connections", "1")
    first = agent.connect()
    session = FarmSession(agent.host, agent.port, token=agent.token, connect_deadline=20)
    threading.Timer(0.5, first.close).start()  # the slot frees up while the session retries
    with session:
        assert session.ping() >= 0
