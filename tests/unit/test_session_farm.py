"""FarmSession against an in-test fake agent built from farm.agent.protocol."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.agent import protocol
from farm.errors import AgentError, AuthError, ProtocolError, SessionError, SessionTimeout
from farm.events import Event, EventType
from farm.session import AgentVersionMismatch, FarmSession
from farm.session.simulate import simulate
from tests.helpers import FakeTaskSet

TOKEN = "s3cret-token"

Handler = Callable[[dict[str, Any]], Any]


def task(tid: int, **over: Any) -> dict[str, Any]:
    base = {"id": tid, "pkg": "hey", "config": {}, "priority": 10, "period": 20,
            "executiontime": 5, "criticaltime": 15, "deadline": 0, "offset": 0,
            "numberofjobs": 2, "quota": 0}  # fmt: skip
    base.update(over)
    return base


class FakeAgent:
    """Agent side of the protocol on loopback: handshake, replies, events, heartbeats."""

    def __init__(
        self,
        token: str = TOKEN,
        *,
        heartbeat: float = 0.1,
        hello: dict[str, Any] | None = None,
        reject_first: int = 0,
        heartbeats: bool = True,
        push_events: bool = True,
    ) -> None:
        self.token = token
        self.heartbeat = heartbeat
        self.hello_overrides = hello or {}
        self.reject_first = reject_first
        self.heartbeats = heartbeats
        self.push_events = push_events
        self.requests: list[dict[str, Any]] = []
        self.accepted = 0
        self.handlers: dict[str, Handler] = {
            "ping": lambda args: {"ts": 1.0},
            "status": lambda args: {"running": False, "agent_version": "fake"},
            "start": lambda args: {"tasks": [t["id"] for t in args["tasks"]]},
            "stop": lambda args: {"stopped": True},
        }
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        self._closing.set()
        for sock in [self.listener, *self._conns]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)
        for sock in [self.listener, *self._conns]:
            sock.close()

    def drop_connections(self) -> None:
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.reject_first:  # like QEMU hostfwd before the guest listens
                conn.close()
                continue
            self._conns.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        lock = threading.Lock()
        sealer: list[protocol.Tagger] = []  # set once authenticated

        def send(message: dict[str, Any]) -> None:
            with lock:
                if sealer:
                    conn.sendall(sealer[0].seal(protocol.encode(message)[4:]))
                else:
                    protocol.write_frame(conn, message)

        try:
            nonce = protocol.new_nonce()
            hello = protocol.hello(nonce, self.heartbeat)
            hello.update(self.hello_overrides)
            raw = protocol.encode(hello)
            conn.sendall(raw)
            auth = protocol.read_frame(conn)
            secret = protocol.session_secret(self.token, raw[4:], str(auth.get("cnonce")))
            if not protocol.check_proof(secret, "client", auth.get("mac")):
                send(protocol.error("auth", "token refused"))
                return
            mac = protocol.proof(secret, "agent")
            send({"type": "welcome", "mac": mac, "heartbeat": self.heartbeat})
            out, into = protocol.directions(secret, agent=True)
            sealer.append(out)
            if self.heartbeats:
                self._spawn(self._beat, send)
            while not self._closing.is_set():
                body = into.open(protocol.read_raw(conn, protocol.MAX_FRAME + protocol.TAG_LEN))
                request = protocol.decode_body(body)
                self.requests.append(request)
                handler = self.handlers.get(request["op"])
                if handler is None:
                    send(protocol.error("unknown_op", f"no op {request['op']}", request["id"]))
                    continue
                try:
                    result = handler(request["args"])
                except KeyError as exc:
                    send(protocol.error("bad_request", str(exc), request["id"]))
                    continue
                send(protocol.reply(request["id"], result))
                if request["op"] == "start" and self.push_events:
                    for _ms, event in simulate(request["args"]["tasks"]):
                        wire = {"task_id": event.task_id, "job": event.job,
                                "type": str(event.type), "ts": event.timestamp}  # fmt: skip
                        send({"type": "event", "event": wire})
        except (OSError, protocol.ProtocolViolation):
            return

    def _beat(self, send: Callable[[dict[str, Any]], None]) -> None:
        while not self._closing.wait(self.heartbeat):
            try:
                send({"type": "heartbeat", "ts": 0.0})
            except OSError:
                return


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    fake = FakeAgent()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def session_for(agent: FakeAgent, **options: Any) -> FarmSession:
    options.setdefault("token", TOKEN)
    options.setdefault("connect_deadline", 10.0)
    return FarmSession("127.0.0.1", agent.port, **options)


def drain(session: FarmSession, limit: int = 100) -> list[Event]:
    events: list[Event] = []
    for _ in range(limit):
        if session.finished():
            return events
        events.extend(session.run(5.0))
    raise AssertionError(f"not finished: {events}")


def test_start_sends_description_binaries_params_and_collects_events(
    agent: FakeAgent, tmp_path: Path
) -> None:
    (tmp_path / "mybin").write_bytes(b"\x00\x01binary\xff")
    taskset = FakeTaskSet([task(0), task(1, numberofjobs=3)], {"mybin": tmp_path / "mybin"})
    admission = {"optimize": {"goal": {"fairness": {"apply": 1}}, "query_interval": 1000}}
    with session_for(agent) as session:
        session.start(taskset, admission, "extra")
        events = drain(session)
    start = next(r for r in agent.requests if r["op"] == "start")
    assert start["type"] == "request" and isinstance(start["id"], int)
    assert start["args"]["tasks"] == taskset.description()["tasks"]
    assert start["args"]["binaries"] == {"mybin": base64.b64encode(b"\x00\x01binary\xff").decode()}
    assert start["args"]["params"] == [admission, "extra"]
    done = [e.task_id for e in events if e.type is EventType.JOBS_DONE]
    assert sorted(done) == [0, 1]
    starts = sorted((e.task_id, e.job) for e in events if e.type is EventType.START)
    assert starts == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


def test_ping_status_and_generic_request(agent: FakeAgent) -> None:
    agent.handlers["echo"] = lambda args: args
    with session_for(agent) as session:
        assert session.ping() >= 0.0
        assert session.status() == {"running": False, "agent_version": "fake"}
        assert session.request("echo", a=1, b=[2]) == {"a": 1, "b": [2]}
        ids = [r["id"] for r in agent.requests]
    assert len(set(ids)) == len(ids) == 3


def test_error_reply_raises_agent_error_with_code(agent: FakeAgent) -> None:
    def busy(args: dict[str, Any]) -> Any:
        raise KeyError("a set is running")

    agent.handlers["start"] = busy
    with session_for(agent) as session:
        with pytest.raises(AgentError) as info:
            session.start(FakeTaskSet([task(0)]))
        assert info.value.code == "bad_request"
        with pytest.raises(AgentError) as unknown:
            session.request("nonsense")
        assert unknown.value.code == "unknown_op"
        assert session.ping() >= 0.0  # the session survives error replies


def test_wrong_token_is_an_auth_error_and_not_retried(agent: FakeAgent) -> None:
    with session_for(agent, token="wrong") as session, pytest.raises(AuthError):
        session.connect()
    assert agent.accepted == 1
    assert issubclass(AuthError, ProtocolError)


def test_version_mismatch_names_both_versions() -> None:
    fake = FakeAgent(hello={"agent_version": "0.stale-image"})
    try:
        with session_for(fake) as session, pytest.raises(AgentVersionMismatch) as info:
            session.connect()
        message = str(info.value)
        assert "0.stale-image" in message
        assert protocol.agent_version() in message
        assert isinstance(info.value, SessionError)
        with session_for(fake, check_version=False) as unchecked:
            unchecked.connect()
            assert unchecked.hello is not None
        with session_for(fake, expected_version="0.stale-image") as pinned:
            pinned.connect()
    finally:
        fake.close()


def test_heartbeat_timeout_detects_a_hung_agent() -> None:
    fake = FakeAgent(heartbeats=False, push_events=False)
    try:
        with session_for(fake, heartbeat_timeout=0.3) as session:
            session.start(FakeTaskSet([task(0)]))
            with pytest.raises(SessionTimeout, match="heartbeat"):
                for _ in range(100):
                    session.run(1.0)
    finally:
        fake.close()


def test_heartbeats_keep_a_quiet_session_alive() -> None:
    fake = FakeAgent(heartbeat=0.05, push_events=False)
    try:
        with session_for(fake, heartbeat_timeout=0.5) as session:
            session.start(FakeTaskSet([task(0)]))
            for _ in range(5):
                assert session.run(0.2) == []
    finally:
        fake.close()


def test_default_heartbeat_timeout_follows_the_hello(agent: FakeAgent) -> None:
    with session_for(agent) as session:
        session.connect()
        assert session.heartbeat_timeout == pytest.approx(3 * agent.heartbeat + 2.0)


def test_lost_connection_raises_after_pending_events() -> None:
    fake = FakeAgent()
    try:
        with session_for(fake) as session:
            session.start(FakeTaskSet([task(0, numberofjobs=1)]))
            fake.drop_connections()
            events: list[Event] = []
            with pytest.raises(SessionError):
                for _ in range(100):
                    events.extend(session.run(1.0))
            assert all(isinstance(e, Event) for e in events)
            with pytest.raises(SessionError):
                session.ping()
    finally:
        fake.close()


def test_connect_retries_while_the_guest_boots() -> None:
    fake = FakeAgent(reject_first=3)
    try:
        with session_for(fake, retry_wait=0.01, retry_wait_max=0.05) as session:
            session.connect()
            assert session.ping() >= 0.0
        assert fake.accepted == 4
    finally:
        fake.close()


def test_connect_is_bounded(closed_port: int) -> None:
    session = FarmSession(
        "127.0.0.1", closed_port, token=TOKEN, connect_attempts=3, retry_wait=0.01
    )
    with session, pytest.raises(SessionError, match="unreachable"):
        session.connect()


def test_connect_gives_up_when_the_guest_is_gone(closed_port: int) -> None:
    calls = []

    def alive() -> bool:
        calls.append(1)
        return len(calls) < 3

    session = FarmSession("127.0.0.1", closed_port, token=TOKEN, retry_wait=0.01)
    with session, pytest.raises(SessionError, match="gone"):
        session.connect(timeout=30.0, alive=alive)
    assert len(calls) == 3


def test_is_available(agent: FakeAgent, closed_port: int) -> None:
    assert FarmSession.is_available("127.0.0.1", agent.port, timeout=2.0)
    assert not FarmSession.is_available("127.0.0.1", closed_port, timeout=1.0)


def test_token_from_the_environment(agent: FakeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARM_TOKEN", TOKEN)
    with FarmSession("127.0.0.1", agent.port) as session:
        assert session.ping() >= 0.0


def test_close_is_idempotent_and_leaves_no_threads(agent: FakeAgent) -> None:
    session = session_for(agent)
    session.start(FakeTaskSet([task(0)]))
    drain(session)
    assert [t for t in threading.enumerate() if t.name.startswith("farm-session")]
    session.close()
    session.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("farm-session")]
    with pytest.raises(SessionError):
        session.run(0.1)


def test_stop_waits_for_the_reply(agent: FakeAgent) -> None:
    agent.push_events = False
    with session_for(agent) as session:
        session.start(FakeTaskSet([task(0)]))
        session.stop()
        assert [r["op"] for r in agent.requests] == ["start", "stop"]
        assert not session.finished()


def test_unanswered_request_times_out(agent: FakeAgent) -> None:
    gate = threading.Event()

    def slow(args: dict[str, Any]) -> Any:
        gate.wait(5)
        return {}

    agent.handlers["slow"] = slow
    try:
        with session_for(agent, request_timeout=0.2) as session:
            with pytest.raises(SessionTimeout, match="slow"):
                session.request("slow")
            gate.set()
    finally:
        gate.set()


def test_dial_attempts_start_short_and_grow_to_connect_timeout() -> None:
    session = FarmSession("127.0.0.1", 1, token="t", connect_timeout=5.0)
    waits = [session.attempt_timeout(k) for k in range(40)]
    assert waits[0] <= 0.5 and waits == sorted(waits) and waits[-1] == 5.0


def test_a_silently_held_connection_is_redialled_soon() -> None:
    """QEMU's user-mode net accepts before the guest is up and then says nothing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # held open, never greeted

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    session = FarmSession(
        "127.0.0.1", listener.getsockname()[1], token="t", connect_timeout=5.0,
        connect_attempts=None, retry_wait=0.01, retry_wait_max=0.01,
    )  # fmt: skip
    try:
        with pytest.raises(SessionError, match="unreachable"):
            session.connect(timeout=2.5)
    finally:
        session.close()
        listener.close()
        for conn in accepted:
            conn.close()
    assert len(accepted) >= 3  # one 5 s wait would have allowed a single attempt
