"""The agent set up before its key: what a warm-start template saves (farm.agent.__main__)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.agent import __main__ as agent_main
from farm.agent import logs
from farm.agent import service as service_mod
from farm.agent.protocol import client_handshake, guest_key
from farm.agent.server import AgentServer
from farm.agent.service import AgentService

TIMEOUT = 30.0


def test_the_server_accepts_nobody_before_it_has_a_key(tmp_path: Path) -> None:
    service = AgentService(tmp_path)
    server = AgentServer(service, None, port=0)
    try:
        r, w = os.pipe()
        with pytest.raises(RuntimeError, match="set_key"):
            server.serve_forever(r)
        with pytest.raises(ValueError):
            server.set_key("")
        os.close(r)
        os.close(w)
    finally:
        server.close()
        service.shutdown()


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signo, handler in saved.items():
        signal.signal(signo, handler)


class _Recording(AgentService):
    made: list[AgentService] = []

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.made.append(self)


def _run_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preload: bool
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """main() with an identity callback; what it saw then, and a client's status after."""
    monkeypatch.setattr(agent_main, "AgentService", _Recording)
    monkeypatch.setattr(logs, "_held", None)  # main holds and releases: leave none behind
    monkeypatch.setattr(service_mod, "load_machinery", lambda: None)  # (the unit tier)
    _Recording.made = []
    for thread in threading.enumerate():  # preload threads of earlier tests (not ours)
        if thread.name == "preload" and thread is not threading.current_thread():
            thread.join(TIMEOUT)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    token = "farm-token"
    seen: dict[str, Any] = {}
    status: dict[str, Any] = {}

    def client() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
                deadline = time.monotonic() + TIMEOUT
                channel = client_handshake(sock, token, deadline, guest="g1")
                channel.send({"type": "request", "id": 1, "op": "status", "args": {}})
                while not status:
                    message = channel.recv(deadline)
                    if message.get("type") == "reply":
                        status.update(message["result"])
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # main's handler: it stops serving

    def identity() -> tuple[str, str]:
        (service,) = _Recording.made
        seen["before_identity"] = service.before_identity
        seen["preloaded"] = service._preloaded.is_set()
        seen["threads"] = {t.name for t in threading.enumerate()}
        threading.Thread(target=client, daemon=True).start()  # waits in the backlog
        return guest_key(token, "g1"), "g1"

    argv = ["--listen-fd", str(listener.detach()), "--workdir", str(tmp_path)]
    code = agent_main.main(argv, identity=identity, preload=preload)
    return code, seen, status


def test_a_template_agent_is_set_up_and_preloaded_before_its_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_signals: None
) -> None:
    code, seen, status = _run_main(tmp_path, monkeypatch, preload=True)
    assert code == agent_main.EXIT_OK
    assert seen["before_identity"] and seen["preloaded"]  # in the snapshot, with the service
    assert "preload" not in seen["threads"]  # and no start-up thread left for a restored guest
    assert (tmp_path / "jobs").is_dir()
    assert status["before_identity"] is True and status["clients"] == 1


def test_a_cold_boot_leaves_the_start_up_work_to_its_first_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_signals: None
) -> None:
    code, seen, status = _run_main(tmp_path, monkeypatch, preload=False)
    assert code == agent_main.EXIT_OK
    assert seen["before_identity"] and not seen["preloaded"]  # off the path to the ack
    assert status["before_identity"] is True


def test_without_identity_or_token_the_agent_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FARM_TOKEN", raising=False)
    assert agent_main.main(["--port", "0"]) == agent_main.EXIT_USAGE
