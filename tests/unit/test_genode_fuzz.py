"""Fuzz of the host side of the Genode Taskloader wire (hypothesis).

The profile parser (``<profile><events><event .../></events></profile>``),
the uint32 message framing and the binary header never fail with anything but
the documented ``ProtocolError`` (farm.errors), on random bytes and on
mutated valid profiles; every event they accept converts into a farm Event.
``--full`` / ``FARM_FULL=1`` runs ten times more examples.
"""

from __future__ import annotations

import itertools
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.errors import ProtocolError
from farm.events import Event
from farm.session import GenodeSession
from farm.session.genode_wire import (
    BINARY_HEADER,
    MessageDecoder,
    parse_binary_header,
    parse_profile,
    profile_xml,
)

FULL = os.environ.get("FARM_FULL", "") not in ("", "0")
EXAMPLES = 5000 if FULL else 500
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

KINDS = ["START", "EXIT", "EXIT_CRITICAL", "OUT_OF_CAPS", "JOBS_DONE", "NOT_SCHEDULED", "WHAT"]
events_st = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.sampled_from(KINDS), st.integers(0, 2**32 - 1)),
    max_size=8,
)
#: attribute values a target (or a broken one) might send
ATTR_VALUES = [
    "", "x", "-1", "1e400", "-1e400", "inf", "nan", "1.5", "0x10", "9" * 5000, "1_0", " 7 ",
    "&amp;", "&lt;", "\u00e9", "\x00", "&#0;", "&#x110000;",
]  # fmt: skip


def convert_all(session: GenodeSession, payload: bytes) -> list[Event]:
    """What GenodeSession.run() does with one payload: parse it, turn events into farm Events."""
    return [session._convert(raw) for raw in parse_profile(payload)]


@pytest.fixture
def session() -> GenodeSession:
    """A session never connected: only its event conversion is used."""
    s = GenodeSession("127.0.0.1", 1)
    s.progress.update([])
    return s


def checked(session: GenodeSession, payload: bytes) -> None:
    try:
        events = convert_all(session, payload)
    except ProtocolError:
        return
    assert all(isinstance(e, Event) for e in events)


@FUZZ
@given(payload=st.binary(max_size=600))
def test_random_bytes_only_protocol_error(payload: bytes) -> None:
    checked(GenodeSession("127.0.0.1", 1), payload)


@FUZZ
@given(events=events_st, data=st.data())
def test_mutated_profiles_only_protocol_error(
    events: list[tuple[int, str, int]], data: st.DataObject
) -> None:
    doc = bytearray(profile_xml(events).encode())
    for _ in range(data.draw(st.integers(1, 6), label="mutations")):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "cut", "attr", "pad"]))
        pos = data.draw(st.integers(0, len(doc)), label="pos")
        if op == "flip" and pos < len(doc):
            doc[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            doc[pos:pos] = data.draw(st.sampled_from(
                [b"<", b">", b"/>", b'"', b"<event/>", b"<profile>", b"</events>", b"&", b"\xff",
                 b'<event task-id="1" type="START" time-stamp="1e400"/>',
                 b"<!DOCTYPE x [<!ENTITY a \"aaaa\">]>", b"&a;", b"<![CDATA[x]]>", b"\0"]
            ))  # fmt: skip
        elif op == "delete":
            del doc[pos : pos + data.draw(st.integers(1, 20))]
        elif op == "cut":
            del doc[pos:]
        elif op == "attr":
            name = data.draw(st.sampled_from(["task-id", "type", "time-stamp"]))
            value = data.draw(st.sampled_from(ATTR_VALUES) | st.text(max_size=12))
            text = doc.decode("ascii", "replace")
            i = text.find(f'{name}="')
            if i >= 0:
                j = text.find('"', i + len(name) + 2)
                quoted = value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
                text = text[: i + len(name) + 2] + quoted + text[j:]
                doc = bytearray(text.encode("utf-8", "surrogatepass"))
        elif op == "pad":
            doc += b"\0" * data.draw(st.integers(0, 8))
    checked(GenodeSession("127.0.0.1", 1), bytes(doc))


@FUZZ
@given(events=events_st)
def test_valid_profiles_round_trip(events: list[tuple[int, str, int]]) -> None:
    assert parse_profile(profile_xml(events).encode() + b"\0\0") == events
    converted = convert_all(GenodeSession("127.0.0.1", 1), profile_xml(events).encode())
    assert [e.task_id for e in converted] == [t for t, _, _ in events]


def test_huge_time_stamps_are_a_protocol_error_or_parsed(session: GenodeSession) -> None:
    """Found by this fuzz: ``1e400`` used to raise OverflowError out of the parser."""
    for stamp in ("1e400", "-1e400", "inf", "nan", "9" * 5000):
        event = f'<event task-id="1" type="EXIT" time-stamp="{stamp}"/>'
        doc = f"<profile><events>{event}</events></profile>"
        with pytest.raises(ProtocolError):
            parse_profile(doc.encode())
    doc = '<profile><events><event task-id="1" type="EXIT" time-stamp="1e300"/></events></profile>'
    checked(session, doc.encode())


@FUZZ
@given(stream=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_framing_random_bytes_only_protocol_error(stream: bytes, cuts: list[int]) -> None:
    decoder = MessageDecoder(max_message=4096)
    got: list[bytes] = []
    bounds = sorted({0, len(stream), *[c for c in cuts if c <= len(stream)]})
    try:
        for a, b in itertools.pairwise(bounds):
            got += decoder.feed(stream[a:b])
    except ProtocolError:
        return
    assert sum(4 + len(p) for p in got) + decoder.pending == len(stream)


@FUZZ
@given(payloads=st.lists(st.binary(max_size=300), max_size=6), cuts=st.lists(st.integers(0, 2000)))
def test_framing_any_split_gives_back_the_payloads(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(struct.pack("<I", len(p)) + p for p in payloads)
    decoder = MessageDecoder()
    bounds = sorted({0, len(stream), *[c for c in cuts if c <= len(stream)]})
    got: list[bytes] = []
    for a, b in itertools.pairwise(bounds):
        got += decoder.feed(stream[a:b])
    assert got == payloads and decoder.pending == 0


@FUZZ
@given(data=st.binary(max_size=40))
def test_binary_header_only_protocol_error(data: bytes) -> None:
    try:
        name, size = parse_binary_header(data)
    except ProtocolError:
        assert len(data) != BINARY_HEADER.size
        return
    assert len(data) == BINARY_HEADER.size and 0 <= size < 2**32 and isinstance(name, str)
