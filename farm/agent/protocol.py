"""farm wire protocol: framed JSON over TCP, shared by the agent and the host.

Stdlib only: this module runs inside the guest image.

Frame: 4-byte big-endian length, then that many bytes of UTF-8 JSON holding
one object with a ``type`` key. Frames above ``MAX_FRAME`` are refused, and
before authentication frames above ``PREAUTH_MAX_FRAME`` (both sides).

Conversation (protocol 2)::

    agent  -> {"type": "hello", "protocol": 2, "agent_version": V, "nonce": N,
               "guest": NAME}                            (guest: when it has one)
    client -> {"type": "auth", "protocol": 2, "cnonce": C, "mac": P("client")}
    agent  -> {"type": "welcome", "mac": P("agent"), "heartbeat": secs}
           |  {"type": "error", "code": "auth"|"protocol"|"busy", ...} and close
    ... every later frame, both ways: length, 16-byte tag, JSON body ...
    client -> {"type": "request", "id": 7, "op": "ping", "args": {...}}
    agent  -> {"type": "reply", "id": 7, "ok": true, "result": {...}}
           |  {"type": "reply", "id": 7, "ok": false, "error": {"code": C, "message": M}}
    agent  -> {"type": "event", "event": {...}}        (any time after start)
    agent  -> {"type": "heartbeat", "ts": T}           (every ``heartbeat`` s)

K is the agent's key: ``guest_key(token, NAME)`` when the hello names a
guest, else the token itself. The session secret ``S = H(K, "farm-session-2" |
SHA256(hello body) | C)`` binds both nonces and the whole greeting; the proofs
are ``P(role) = H(S, role + "-proof")`` and each direction has its own MAC key
``H(S, "client->agent")`` / ``H(S, "agent->client")``. After the welcome every
frame carries ``H(dirkey, seq | body)[:16]`` where seq counts that direction's
frames from 0, so a relay that saw the handshake can forward bytes but not
inject, alter, drop, reorder or replay a frame. H is HMAC-SHA256. Payloads
are not encrypted (see docs/security.md).
"""

from __future__ import annotations

import os
import struct
import time
from _operator import _compare_digest as compare_digest  # hmac's own, constant time

from farm.agent import wirejson as json  # json.dumps/loads without importing json (and re)

# SHA-256 without hashlib and hmac: the guest ships no OpenSSL (its /init makes
# _hashlib fail at once), and there hashlib's import builds every builtin hash
# (_sha3, _blake2, ...) and hmac adds warnings: ~2 M guest instructions before the
# handshake. The host keeps OpenSSL's SHA-256 (hashlib.sha256 is that one too).
try:
    from _hashlib import openssl_sha256 as sha256
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[no-redef]  # Python 3.11's builtin
    except ImportError:  # 3.12 renamed it
        from hashlib import sha256

# Lean imports: the guest agent must reach its handshake fast, and pathlib, secrets
# and typing would bring a dozen more modules, each costing milliseconds under TCG.
TYPE_CHECKING = False  # not typing.TYPE_CHECKING: that would import typing
if TYPE_CHECKING:
    import socket  # annotations only: socket.py's enum set-up costs ~3 M instructions
    from typing import Any

PROTOCOL_VERSION = 2
DEFAULT_PORT = 3001
MAX_FRAME = 64 * 1024 * 1024
#: largest frame either side accepts before the handshake is done
PREAUTH_MAX_FRAME = 4096
TAG_LEN = 16
GUEST_KEY_LABEL = b"farm-guest-key:"
_HEADER = struct.Struct(">I")
_SEQ = struct.Struct(">Q")


class ProtocolViolation(Exception):
    """Raised by the stdlib-only side; the host maps it to farm.errors.ProtocolError."""


class BadTag(ProtocolViolation):
    """A frame's MAC did not verify: forged, altered, replayed or reordered."""


class AgentBusy(ConnectionError):
    """The agent turned the connection away for now (too many handshakes): retry."""


def agent_version() -> str:
    """Version of this agent: package version plus a digest of the agent's source.

    Any change to the agent code changes it, so a guest image built from other
    code is detected at the handshake.
    """
    digest = sha256()
    here = os.path.dirname(os.path.realpath(__file__))
    for name in sorted(n for n in os.listdir(here) if n.endswith(".py")):
        digest.update(name.encode())
        with open(os.path.join(here, name), "rb") as fh:
            digest.update(fh.read())
    return "1." + digest.hexdigest()[:12]


def dumps(message: dict[str, Any]) -> bytes:
    """One message's frame body (no header): compact JSON within ``MAX_FRAME``."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolViolation(f"frame of {len(body)} bytes exceeds limit {MAX_FRAME}")
    return body


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message as an unsealed frame (the handshake's)."""
    body = dumps(message)
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse a frame body; raise ProtocolViolation unless it is a JSON object with a type."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolViolation(f"frame is not UTF-8 JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolViolation("frame is not a JSON object with a string 'type'")
    return message


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole messages (never one recv = one message)."""

    def __init__(self, max_frame: int = MAX_FRAME, opener: Tagger | None = None) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._opener = opener

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        while len(self._buf) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buf)
            if length > self._max:
                raise ProtocolViolation(f"frame of {length} bytes exceeds limit {self._max}")
            if len(self._buf) < _HEADER.size + length:
                break
            body = bytes(self._buf[_HEADER.size : _HEADER.size + length])
            del self._buf[: _HEADER.size + length]
            if self._opener is not None:
                body = self._opener.open(body)
            out.append(decode_body(body))
        return out


def recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    """Read exactly n bytes or raise ConnectionError on EOF.

    ``deadline`` (time.monotonic()) bounds the whole read, however the peer
    trickles its bytes (TimeoutError); None: the socket's own timeout per recv.
    """
    chunks = bytearray()
    while len(chunks) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"peer too slow: {len(chunks)} of {n} bytes by the deadline")
            sock.settimeout(left)
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        chunks += chunk
    return bytes(chunks)


def read_raw(
    sock: socket.socket, max_frame: int = MAX_FRAME, deadline: float | None = None
) -> bytes:
    """One frame's body, unparsed."""
    (length,) = _HEADER.unpack(recv_exact(sock, _HEADER.size, deadline))
    if length > max_frame:
        raise ProtocolViolation(f"frame of {length} bytes exceeds limit {max_frame}")
    return recv_exact(sock, length, deadline)


def read_frame(
    sock: socket.socket, max_frame: int = MAX_FRAME, deadline: float | None = None
) -> dict[str, Any]:
    """Blocking read of one unauthenticated message (the handshake's; see Channel after it)."""
    return decode_body(read_raw(sock, max_frame, deadline))


def write_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


#: HMAC's pads (RFC 2104) as translation tables: key.translate(_IPAD) = key XOR 0x36...
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
_BLOCK = 64  # SHA-256's block size


def _pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA256's inner and outer padded keys for ``key`` (RFC 2104)."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return key.translate(_IPAD), key.translate(_OPAD)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256(key, data): what ``hmac.new(key, data, "sha256").digest()`` returns."""
    ipad, opad = _pads(key)
    return sha256(opad + sha256(ipad + data).digest()).digest()


def _h(key: bytes, data: bytes) -> bytes:
    return hmac_sha256(key, data)


def guest_key(token: str, guest: str) -> str:
    """The key of guest ``guest``: HMAC-SHA256(token, "farm-guest-key:" + name) in hex.

    A guest holds only its own key, so it can open no other guest's agent, and
    the farm token cannot be recovered from it.
    """
    return hmac_sha256(token.encode(), GUEST_KEY_LABEL + guest.encode()).hex()


def session_secret(key: str, hello_body: bytes, cnonce: str) -> bytes:
    """S: binds the key, the agent's whole greeting (its nonce) and the client's nonce."""
    transcript = sha256(hello_body).digest()
    return _h(key.encode(), b"farm-session-2|" + transcript + b"|" + cnonce.encode())


def proof(secret: bytes, role: str) -> str:
    """What ``role`` ('client' or 'agent') shows to prove it derived the session secret."""
    return _h(secret, role.encode() + b"-proof").hex()


def check_proof(secret: bytes, role: str, value: object) -> bool:
    if not isinstance(value, str) or not value.isascii():  # compare_digest: ASCII str only
        return False
    return compare_digest(proof(secret, role), value)


class Tagger:
    """One direction's frame MACs: HMAC-SHA256(key, seq | body) truncated, seq counting up.

    The HMAC pads are hashed once; each frame then costs two SHA-256 copies.
    Not thread-safe: one sender (or one reader) per direction.
    """

    def __init__(self, secret: bytes, direction: str) -> None:
        key = _h(secret, direction.encode())
        ipad, opad = _pads(key)
        self._inner = sha256(ipad)
        self._outer = sha256(opad)
        self.seq = 0

    def tag(self, body: bytes) -> bytes:
        """The tag of the next frame (advances the sequence)."""
        inner = self._inner.copy()
        inner.update(_SEQ.pack(self.seq))
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        self.seq += 1
        return outer.digest()[:TAG_LEN]

    def seal(self, body: bytes) -> bytes:
        """A whole frame: header, tag, body."""
        return _HEADER.pack(TAG_LEN + len(body)) + self.tag(body) + body

    def open(self, data: bytes) -> bytes:
        """The body of a received frame (tag + body); BadTag unless its tag is the next one."""
        if len(data) < TAG_LEN:
            raise BadTag("frame too short for its tag")
        body = data[TAG_LEN:]
        if not compare_digest(self.tag(body), data[:TAG_LEN]):
            raise BadTag(f"frame {self.seq - 1} failed its MAC (forged, replayed or reordered)")
        return body


def directions(secret: bytes, agent: bool) -> tuple[Tagger, Tagger]:
    """(send, receive) taggers of one side of a session."""
    c2a, a2c = Tagger(secret, "client->agent"), Tagger(secret, "agent->client")
    return (a2c, c2a) if agent else (c2a, a2c)


def new_nonce() -> str:
    """128 random bits in hex (what ``secrets.token_hex(16)`` returns, without importing it)."""
    return os.urandom(16).hex()


def hello(
    nonce: str, heartbeat: float, version: str | None = None, guest: str | None = None
) -> dict[str, Any]:
    """The agent's greeting; ``version`` defaults to :func:`agent_version` (hashes the sources)."""
    greeting = {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "agent_version": agent_version() if version is None else version,
        "nonce": nonce,
        "heartbeat": heartbeat,
        "pid": os.getpid(),
    }
    if guest:
        greeting["guest"] = guest
    return greeting


def error(code: str, message: str, request_id: object = None) -> dict[str, Any]:
    """An error reply (to a request when request_id is given, else a connection error)."""
    if request_id is None:
        return {"type": "error", "code": code, "message": message}
    return {
        "type": "reply",
        "id": request_id,
        "ok": False,
        "error": {"code": code, "message": message},
    }


def reply(request_id: object, result: Any = None) -> dict[str, Any]:
    return {"type": "reply", "id": request_id, "ok": True, "result": result}


class Channel:
    """An authenticated connection's framing: every frame sealed and checked in order."""

    def __init__(self, sock: socket.socket, hello: dict[str, Any], secret: bytes) -> None:
        self.sock = sock
        self.hello = hello
        self.sender, self.receiver = directions(secret, agent=False)

    def encode(self, message: dict[str, Any]) -> bytes:
        """Serialise and seal the next frame (call in sending order)."""
        return self.sender.seal(dumps(message))

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(self.encode(message))

    def recv(self, deadline: float | None = None) -> dict[str, Any]:
        return decode_body(self.receiver.open(read_raw(self.sock, MAX_FRAME + TAG_LEN, deadline)))


def check_hello(greeting: dict[str, Any]) -> None:
    """ProtocolViolation unless ``greeting`` is a hello of our protocol; AgentBusy for busy."""
    if greeting.get("type") == "error" and greeting.get("code") == "busy":
        raise AgentBusy(f"agent busy: {greeting.get('message')}")
    if greeting.get("type") != "hello":
        raise ProtocolViolation(f"expected hello, got {greeting.get('type')!r}")
    if greeting.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolViolation(
            f"agent speaks protocol {greeting.get('protocol')!r}, this client speaks "
            f"{PROTOCOL_VERSION} (rebuild the guest image or update farm)"
        )


def client_handshake(
    sock: socket.socket,
    token: str,
    deadline: float | None = None,
    guest: str | None = None,
) -> Channel:
    """Run the client side of the greeting on a connected socket; return the channel.

    ``token`` is the farm token (or, for an agent that names no guest, its key);
    ``guest``: the guest we mean to reach (None: whichever the hello names).
    ``deadline`` bounds the whole handshake. Raises ProtocolViolation (bad
    greeting, version), AgentBusy, PermissionError (key) or OSError/TimeoutError.
    """
    raw = read_raw(sock, PREAUTH_MAX_FRAME, deadline)
    greeting = decode_body(raw)
    check_hello(greeting)
    named = greeting.get("guest")
    if named is not None and not (isinstance(named, str) and named.isascii() and named):
        raise ProtocolViolation(f"hello names no usable guest: {named!r}"[:200])
    if guest is not None and named != guest:
        raise PermissionError(f"expected guest {guest!r}, the agent says it is {named!r}")
    key = guest_key(token, named) if isinstance(named, str) and named else token
    cnonce = new_nonce()
    secret = session_secret(key, raw, cnonce)
    auth = {"type": "auth", "protocol": PROTOCOL_VERSION, "cnonce": cnonce}
    auth["mac"] = proof(secret, "client")
    write_frame(sock, auth)
    answer = read_frame(sock, PREAUTH_MAX_FRAME, deadline)
    if answer.get("type") == "error":
        if answer.get("code") == "busy":
            raise AgentBusy(f"agent busy: {answer.get('message')}")
        if answer.get("code") == "protocol":
            raise ProtocolViolation(f"agent refused: {answer.get('message')}")
        raise PermissionError(f"agent refused: {answer.get('message')}")
    if answer.get("type") != "welcome" or not check_proof(secret, "agent", answer.get("mac")):
        raise PermissionError("agent failed to prove the key (impostor, relay or wrong token)")
    return Channel(sock, greeting, secret)


#: Event types streamed by targets (the one taxonomy of DESIGN.md). ``NOTICE``
#: carries agent remarks that are not job exits (e.g. scheduling fallback).
JOB_EXIT_TYPES = (
    "EXIT",
    "EXIT_CRITICAL",
    "EXIT_ERROR",
    "OUT_OF_QUOTA",
    "EXIT_PERIOD",
    "EXIT_EXTERNAL",
    "NOT_SCHEDULED",
)
EVENT_TYPES = ("START", *JOB_EXIT_TYPES, "JOBS_DONE", "NOTICE")
