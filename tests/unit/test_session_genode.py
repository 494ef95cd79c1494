"""GenodeSession against the FakeDom0Server (loopback, in-process), and the wire format."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.errors import ConfigError, ProtocolError, SessionError, SessionTimeout
from farm.events import Event, EventType
from farm.session import GenodeSession
from farm.session.fake_dom0 import FakeDom0Server
from farm.session.genode_wire import (
    BINARY_HEADER,
    Command,
    MessageDecoder,
    binary_header,
    description_xml,
    element_to_dict,
    parse_binary_header,
    parse_profile,
    parse_xml,
    profile_xml,
    render_xml,
    word,
)
from tests.helpers import FakeTaskSet

ADMISSION = {
    "optimize": {
        "goal": {"fairness": {"apply": 1}, "utilization": {"apply": 0}},
        "query_interval": 1000,
    }
}


def task(tid: int, **over: Any) -> dict[str, Any]:
    base = {
        "id": tid,
        "pkg": "hey",
        "config": {"arg1": 7},
        "priority": 10 + tid,
        "period": 100,
        "executiontime": 10,
        "criticaltime": 50,
        "deadline": 0,
        "offset": 0,
        "numberofjobs": 2,
        "quota": 1048576,
    }
    base.update(over)
    return base


@pytest.fixture
def fake() -> Iterator[FakeDom0Server]:
    server = FakeDom0Server()
    try:
        yield server
    finally:
        server.close()


def collect(session: GenodeSession, limit: int = 200) -> list[Event]:
    events: list[Event] = []
    for _ in range(limit):
        if session.finished():
            return events
        events.extend(session.run(5.0))
    raise AssertionError(f"set did not finish; got {events}")


# -- wire format -------------------------------------------------------------------------


def test_words_are_little_endian_uint32() -> None:
    assert word(Command.START) == bytes.fromhex("e54d5100")
    assert word(Command.SEND_BINARIES) == (0xDE5F11E).to_bytes(4, "little")
    assert [int(c) for c in Command] == [
        0xDE5,
        0xDE6,
        0xDE5F11E,
        0x90,
        0x514DE5,
        0x514DE6,
        0x6F7074,
        0xAAAAA,
        0x159D3,
    ]


def test_binary_header_is_15_byte_name_nul_and_size() -> None:
    header = binary_header("hey", 5000)
    assert len(header) == BINARY_HEADER.size == 20
    assert header[:15] == b"hey" + b"\0" * 12
    assert header[15:16] == b"\0"
    assert header[16:] == (5000).to_bytes(4, "little")
    assert parse_binary_header(header) == ("hey", 5000)
    assert parse_binary_header(binary_header("x" * 15, 1)) == ("x" * 15, 1)


@pytest.mark.parametrize("name", ["", "a" * 16, "hé", "a\0b"])
def test_binary_header_rejects_bad_names(name: str) -> None:
    with pytest.raises(ConfigError):
        binary_header(name, 1)


def test_description_xml_has_no_header_and_nests_config() -> None:
    xml = description_xml([{"id": 0, "pkg": "hey", "config": {"arg1": 3}, "period": 1000.0}])
    assert xml == (
        "<taskset><periodictask><id>0</id><pkg>hey</pkg><config><arg1>3</arg1></config>"
        "<period>1000</period></periodictask></taskset>"
    )


def test_render_xml_lists_attributes_text_and_escaping() -> None:
    doc = {"a": {"@k": 'v"<', "b": [1, 2], "c": True, "d": None, "#text": "x&y"}}
    assert render_xml(doc) == '<a k="v&quot;&lt;"><b>1</b><b>2</b><c>true</c><d></d>x&amp;y</a>'


def test_optimize_xml_round_trips_the_admission_dict() -> None:
    xml = render_xml(ADMISSION)
    assert xml == (
        "<optimize><goal><fairness><apply>1</apply></fairness><utilization><apply>0</apply>"
        "</utilization></goal><query_interval>1000</query_interval></optimize>"
    )
    assert {"optimize": element_to_dict(parse_xml(xml))} == ADMISSION


def test_parse_profile_single_many_none_and_padding() -> None:
    one = b'<profile><events><event task-id="3" type="START" time-stamp="12"/></events></profile>'
    assert parse_profile(one) == [(3, "START", 12)]
    many = profile_xml([(0, "START", 1), (0, "EXIT", 5), (1, "JOBS_DONE", 9)]).encode()
    assert parse_profile(many + b"\0\0") == [(0, "START", 1), (0, "EXIT", 5), (1, "JOBS_DONE", 9)]
    assert parse_profile(b"<profile><events/></profile>") == []
    assert parse_profile(one + b"garbage after the document") == [(3, "START", 12)]
    with pytest.raises(ProtocolError):
        parse_profile(b"<profile><events><event task-id='x'/></events></profile>")
    with pytest.raises(ProtocolError):
        parse_profile(b"<profile><events>")


def test_message_decoder_handles_any_split() -> None:
    payloads = [profile_xml([(0, "START", i)]).encode() for i in range(3)]
    stream = b"".join(word(len(p)) + p for p in payloads)
    for step in (1, 2, 3, 7, len(stream)):
        decoder = MessageDecoder()
        got: list[bytes] = []
        for i in range(0, len(stream), step):
            got.extend(decoder.feed(stream[i : i + step]))
        assert got == payloads
        assert decoder.pending == 0


def test_message_decoder_bounds_the_length() -> None:
    with pytest.raises(ProtocolError):
        MessageDecoder(max_message=10).feed(word(11))


# -- the session against the fake dom0 ---------------------------------------------------


def test_is_available_uses_the_echo(fake: FakeDom0Server) -> None:
    assert GenodeSession.is_available("127.0.0.1", fake.port, timeout=2.0)
    assert fake.wait_for(lambda r: Command.AVAILABLE in r.commands)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert not GenodeSession.is_available("127.0.0.1", port, timeout=1.0)


def test_full_run_sends_every_command_in_taskgen_order(
    fake: FakeDom0Server, tmp_path: Path
) -> None:
    (tmp_path / "hey").write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
    (tmp_path / "namaste").write_bytes(b"second binary")
    binaries = {"hey": tmp_path / "hey", "namaste": tmp_path / "namaste"}
    taskset = FakeTaskSet([task(0), task(1, pkg="namaste", numberofjobs=3)], binaries)
    with GenodeSession("127.0.0.1", fake.port) as session:
        session.start(taskset, ADMISSION)
        events = collect(session)
    assert fake.wait_for(lambda r: r.commands[-1] == Command.CLEAR)  # close() clears
    record = fake.record
    assert record.commands == [
        Command.AVAILABLE,
        Command.CLEAR,
        Command.OPTIMIZE,
        Command.SEND_DESCS,
        Command.SEND_BINARIES,
        Command.START,
        Command.CLEAR,
    ]
    assert record.descs == [description_xml(taskset.description()["tasks"])]
    assert record.tasks[0] == taskset.description()["tasks"]
    assert record.optimize == [render_xml(ADMISSION)]
    assert [(b.name, b.size, b.data) for b in record.binaries] == [
        (name, path.stat().st_size, path.read_bytes()) for name, path in binaries.items()
    ]
    assert record.errors == []
    # events: every job started and exited, JOBS_DONE per task, ms -> s
    per_task = {tid: [e for e in events if e.task_id == tid] for tid in (0, 1)}
    for tid, jobs in ((0, 2), (1, 3)):
        starts = [e.job for e in per_task[tid] if e.type is EventType.START]
        exits = [e.job for e in per_task[tid] if e.is_exit]
        assert starts == exits == list(range(jobs))
        assert per_task[tid][-1].type is EventType.JOBS_DONE
        assert per_task[tid][-1].job is None
    assert [e.timestamp for e in per_task[0][:2]] == [0.0, 0.010]
    assert len(events) == len(record.pushed)


def test_no_optimize_without_admission_dict_and_zero_binaries(fake: FakeDom0Server) -> None:
    with GenodeSession("127.0.0.1", fake.port) as session:
        session.start(FakeTaskSet([task(0, numberofjobs=1)]))
        collect(session)
    assert Command.OPTIMIZE not in fake.record.commands
    assert fake.record.binaries == []
    assert fake.record.optimize == []


@pytest.mark.parametrize(
    ("batch_sizes", "fragment"),
    [((1,), None), ((100,), None), ((1, 4), None), ((2, 1, 5), 3), ((100,), 1)],
    ids=["single-event", "one-profile", "mixed", "mixed-fragmented", "bytewise"],
)
def test_profiles_of_one_or_many_events_and_split_reads(
    batch_sizes: tuple[int, ...], fragment: int | None
) -> None:
    taskset = FakeTaskSet([task(0, numberofjobs=3), task(1, numberofjobs=2, offset=5)])
    with (
        FakeDom0Server(batch_sizes=batch_sizes, fragment=fragment) as server,
        GenodeSession("127.0.0.1", server.port) as session,
    ):
        session.start(taskset)
        events = collect(session)
        expected = [(t, k, s) for t, k, s in server.record.pushed]
    assert [(e.task_id, str(e.type), round(e.timestamp * 1000)) for e in events] == expected
    assert sum(e.type is EventType.JOBS_DONE for e in events) == 2


def test_late_jobs_exit_critical(fake: FakeDom0Server) -> None:
    late = task(0, executiontime=80, criticaltime=60, numberofjobs=2)
    with GenodeSession("127.0.0.1", fake.port) as session:
        session.start(FakeTaskSet([late]))
        events = collect(session)
    assert [e.type for e in events if e.is_exit] == [EventType.EXIT_CRITICAL] * 2


def test_stop_ends_running_jobs_externally() -> None:
    slow = task(0, period=1000, executiontime=500, numberofjobs=5)
    with (
        FakeDom0Server(time_scale=1.0, batch_sizes=(1,)) as server,
        GenodeSession("127.0.0.1", server.port) as session,
    ):
        session.start(FakeTaskSet([slow]))
        first = session.run(5.0)
        assert [e.type for e in first] == [EventType.START]
        session.stop()
        after = session.run(5.0)
        assert [(e.type, e.job) for e in after] == [(EventType.EXIT_EXTERNAL, 0)]
        assert not session.finished()
        assert server.wait_for(lambda r: Command.STOP in r.commands)


def test_second_start_on_same_connection_renumbers_jobs(fake: FakeDom0Server) -> None:
    with GenodeSession("127.0.0.1", fake.port) as session:
        for _ in range(2):
            session.start(FakeTaskSet([task(4, numberofjobs=2)]))
            events = collect(session)
            assert [e.job for e in events if e.type is EventType.START] == [0, 1]
    assert fake.record.commands.count(Command.START) == 2


def test_lost_connection_raises_session_error() -> None:
    slow = task(0, period=1000, executiontime=500, numberofjobs=5)
    server = FakeDom0Server(time_scale=1.0)
    try:
        with GenodeSession("127.0.0.1", server.port) as session:
            session.start(FakeTaskSet([slow]))
            server.close()
            with pytest.raises(SessionError):
                for _ in range(10):
                    session.run(5.0)
    finally:
        server.close()


def test_event_timeout_detects_a_silent_target() -> None:
    slow = task(0, period=60_000, executiontime=1, numberofjobs=2, offset=60_000)
    with (
        FakeDom0Server(time_scale=1.0) as server,
        GenodeSession("127.0.0.1", server.port, event_timeout=0.2) as session,
    ):
        session.start(FakeTaskSet([slow]))
        with pytest.raises(SessionTimeout):
            for _ in range(50):
                session.run(1.0)


def test_unreachable_target_bounded(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    session = GenodeSession("127.0.0.1", port, connect_attempts=2, connect_deadline=5.0)
    with session, pytest.raises(SessionError, match="unreachable"):
        session.connect()


def test_connect_gives_up_when_target_not_alive(fake: FakeDom0Server) -> None:
    with (
        GenodeSession("127.0.0.1", fake.port) as session,
        pytest.raises(SessionError, match="gone"),
    ):
        session.connect(timeout=5.0, alive=lambda: False)


def test_bad_binary_name_is_refused_before_sending(fake: FakeDom0Server, tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(b"x")
    taskset = FakeTaskSet([task(0)], {"a_very_long_binary_name": tmp_path / "b"})
    with GenodeSession("127.0.0.1", fake.port) as session, pytest.raises(ConfigError):
        session.start(taskset)
    assert Command.SEND_DESCS not in fake.record.commands


def test_more_than_one_session_parameter_is_refused(fake: FakeDom0Server) -> None:
    with GenodeSession("127.0.0.1", fake.port) as session, pytest.raises(ConfigError):
        session.start(FakeTaskSet([task(0)]), ADMISSION, ADMISSION)


def test_stale_profile_before_go_send_is_skipped() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        session = GenodeSession("x", 1)
        session._sock = ours
        stale = profile_xml([(0, "EXIT", 5)]).encode() + b"\0"
        theirs.sendall(word(len(stale)) + stale + word(Command.GO_SEND))
        session._await_go()  # returns once GO_SEND arrives
        theirs.sendall(word(0xBAD0BAD))
        with pytest.raises(ProtocolError):
            session._await_go()
        session._sock = None


def test_genode_only_types_are_mapped() -> None:
    session = GenodeSession("x", 1)
    session._begin(FakeTaskSet([task(0)]))
    assert session._convert((0, "START", 1)) == Event(0, 0, EventType.START, 0.001)
    caps = session._convert((0, "OUT_OF_CAPS", 2))
    assert (caps.type, caps.job, caps.detail) == (EventType.OUT_OF_QUOTA, 0, "OUT_OF_CAPS")
    odd = session._convert((0, "WHATEVER", 3))
    assert (odd.type, odd.job) == (EventType.NOTICE, None)
    skipped = session._convert((0, "NOT_SCHEDULED", 4))
    assert (skipped.type, skipped.job) == (EventType.NOT_SCHEDULED, 1)


def test_threads_are_cleaned_up(fake: FakeDom0Server) -> None:
    before = set(threading.enumerate())
    with FakeDom0Server() as server, GenodeSession("127.0.0.1", server.port) as session:
        session.start(FakeTaskSet([task(0)]))
        collect(session)
    assert set(threading.enumerate()) <= before
