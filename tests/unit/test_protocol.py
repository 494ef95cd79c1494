"""The wire protocol shared by agent and host: framing, decoding, HMAC, message shapes."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farm.agent import protocol

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)  # fmt: skip
messages = st.dictionaries(st.text(max_size=8), json_values, max_size=5).map(
    lambda d: {**d, "type": "request"}
)


@given(st.lists(messages, min_size=1, max_size=5), st.data())
def test_frames_survive_any_chunking(batch: list[dict[str, Any]], data: st.DataObject) -> None:
    stream = b"".join(protocol.encode(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = protocol.FrameDecoder()
    out: list[dict[str, Any]] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        out += decoder.feed(stream[start:end])
    assert out == batch


@given(st.binary(max_size=200))
def test_decode_body_raises_only_protocol_violation(body: bytes) -> None:
    try:
        message = protocol.decode_body(body)
    except protocol.ProtocolViolation:
        return
    assert isinstance(message, dict) and isinstance(message["type"], str)


def test_oversized_frames_are_refused() -> None:
    decoder = protocol.FrameDecoder(max_frame=10)
    with pytest.raises(protocol.ProtocolViolation):
        decoder.feed(struct.pack(">I", 11))


@pytest.mark.parametrize("body", [b"[1]", b'{"id": 1}', b'{"type": 5}', b"\xff", b"nope"])
def test_bad_bodies(body: bytes) -> None:
    with pytest.raises(protocol.ProtocolViolation):
        protocol.decode_body(body)


def test_mac_roles_and_tokens_differ() -> None:
    mac = protocol.mac("token", "client", "n")
    assert protocol.check_mac("token", "client", "n", mac)
    assert not protocol.check_mac("token", "agent", "n", mac)
    assert not protocol.check_mac("other", "client", "n", mac)
    assert not protocol.check_mac("token", "client", "n", None)
    assert protocol.new_nonce() != protocol.new_nonce()


def test_message_shapes() -> None:
    hello = protocol.hello("n", 1.5)
    assert (hello["type"], hello["protocol"], hello["nonce"], hello["heartbeat"]) == (
        "hello", protocol.PROTOCOL_VERSION, "n", 1.5,
    )  # fmt: skip
    assert protocol.reply(3, {"a": 1}) == {"type": "reply", "id": 3, "ok": True, "result": {"a": 1}}
    assert protocol.error("busy", "m", 4)["error"] == {"code": "busy", "message": "m"}
    assert protocol.error("auth", "m") == {"type": "error", "code": "auth", "message": "m"}
    assert protocol.agent_version().startswith("1.")
    assert set(protocol.JOB_EXIT_TYPES) < set(protocol.EVENT_TYPES)
