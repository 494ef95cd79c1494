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


def test_proofs_bind_roles_keys_and_both_nonces() -> None:
    secret = protocol.session_secret("token", b"hello-1", "c")
    mac = protocol.proof(secret, "client")
    assert protocol.check_proof(secret, "client", mac)
    assert not protocol.check_proof(secret, "agent", mac)
    for other in (
        protocol.session_secret("other", b"hello-1", "c"),  # another key
        protocol.session_secret("token", b"hello-2", "c"),  # another greeting (agent nonce)
        protocol.session_secret("token", b"hello-1", "d"),  # another client nonce
    ):
        assert not protocol.check_proof(other, "client", mac)
    assert not protocol.check_proof(secret, "client", None)
    assert not protocol.check_proof(secret, "client", "\udfff" * 64)  # not ASCII: no TypeError
    assert protocol.new_nonce() != protocol.new_nonce()


def test_guest_keys_differ_per_guest_and_hide_the_token() -> None:
    a, b = protocol.guest_key("T", "farm-1"), protocol.guest_key("T", "farm-2")
    assert a != b and "T" not in (a, b) and len(a) == 64
    assert a == protocol.guest_key("T", "farm-1")
    assert a != protocol.guest_key("U", "farm-1")


def _pair() -> tuple[protocol.Tagger, protocol.Tagger]:
    secret = protocol.session_secret("k", b"h", "c")
    client_send, _ = protocol.directions(secret, agent=False)
    _, agent_recv = protocol.directions(secret, agent=True)
    return client_send, agent_recv


def test_sealed_frames_open_in_order_only() -> None:
    send, recv = _pair()
    frames = [send.seal(b'{"n":%d}' % i)[4:] for i in range(3)]
    assert recv.open(frames[0]) == b'{"n":0}'
    with pytest.raises(protocol.BadTag):  # replay of frame 0
        recv.open(frames[0])
    send, recv = _pair()
    frames = [send.seal(b"x%d" % i)[4:] for i in range(3)]
    with pytest.raises(protocol.BadTag):  # reordered: frame 1 first
        recv.open(frames[1])


def test_forged_or_altered_frames_are_refused() -> None:
    send, recv = _pair()
    frame = bytearray(send.seal(b'{"type":"request"}')[4:])
    frame[-2] ^= 1
    with pytest.raises(protocol.BadTag):
        recv.open(bytes(frame))
    _, recv = _pair()
    with pytest.raises(protocol.BadTag):
        recv.open(b"\0" * 16 + b'{"type":"request"}')
    with pytest.raises(protocol.BadTag):
        recv.open(b"short")
    # the other direction's key does not open it either
    secret = protocol.session_secret("k", b"h", "c")
    agent_send, _ = protocol.directions(secret, agent=True)
    _, agent_recv = protocol.directions(secret, agent=True)
    with pytest.raises(protocol.BadTag):
        agent_recv.open(agent_send.seal(b"{}")[4:])


def test_tag_matches_hmac_sha256() -> None:
    import hashlib
    import hmac

    secret = protocol.session_secret("k", b"h", "c")
    send, _ = protocol.directions(secret, agent=False)
    key = hmac.new(secret, b"client->agent", hashlib.sha256).digest()
    want = hmac.new(key, (0).to_bytes(8, "big") + b"{}", hashlib.sha256).digest()[:16]
    assert send.tag(b"{}") == want


@given(st.binary(max_size=200), st.binary(max_size=300))
def test_own_hmac_matches_the_stdlib_for_any_key_and_length(key: bytes, data: bytes) -> None:
    import hashlib
    import hmac

    # keys around the 64-byte block (padded, exact, hashed first) and empty ones included
    assert protocol.hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()


def test_own_hmac_matches_the_stdlib_at_the_block_boundaries() -> None:
    import hashlib
    import hmac

    for n in (0, 1, 31, 32, 63, 64, 65, 127, 128, 129, 1000):
        key, data = (bytes(range(256)) * 4)[:n], bytes(n)
        assert protocol.hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()
        assert (
            protocol.guest_key("t" * n, "g")
            == hmac.new(b"t" * n, protocol.GUEST_KEY_LABEL + b"g", hashlib.sha256).hexdigest()
        )


def test_the_guest_derives_the_same_keys_without_openssl() -> None:
    """The guest has no _hashlib: protocol then hashes with the builtin, to the same values."""
    import hashlib
    import hmac
    import os
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import sys; sys.modules['_hashlib'] = None\n"
        "from farm.agent import protocol as p\n"
        "assert 'hashlib' not in sys.modules and 'hmac' not in sys.modules\n"
        "s = p.session_secret(p.guest_key('tok', 'g1'), b'hello', 'cn')\n"
        "send, _ = p.directions(s, agent=True)\n"
        "print(s.hex(), p.proof(s, 'agent'), send.tag(b'{}').hex(), send.tag(b'x' * 99).hex())"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    key = hmac.new(b"tok", b"farm-guest-key:g1", hashlib.sha256).hexdigest()
    transcript = hashlib.sha256(b"hello").digest()
    secret = hmac.new(
        key.encode(), b"farm-session-2|" + transcript + b"|cn", hashlib.sha256
    ).digest()
    proof = hmac.new(secret, b"agent-proof", hashlib.sha256).hexdigest()
    direction = hmac.new(secret, b"agent->client", hashlib.sha256).digest()
    tags = [
        hmac.new(direction, seq.to_bytes(8, "big") + body, hashlib.sha256).hexdigest()[:32]
        for seq, body in ((0, b"{}"), (1, b"x" * 99))
    ]
    assert out.stdout.split() == [secret.hex(), proof, *tags]


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
