"""farm wire protocol: framed JSON over TCP, shared by the agent and the host.

Stdlib only: this module runs inside the guest image.

Frame: 4-byte big-endian length, then that many bytes of UTF-8 JSON holding
one object with a ``type`` key. Frames above ``MAX_FRAME`` are refused.

Conversation::

    agent  -> {"type": "hello", "protocol": 1, "agent_version": V, "nonce": N}
    client -> {"type": "auth", "protocol": 1, "mac": H(token, "client:"+N), "cnonce": C}
    agent  -> {"type": "welcome", "mac": H(token, "agent:"+C), "heartbeat": secs}
           |  {"type": "error", "code": "auth", "message": ...} and close
    client -> {"type": "request", "id": 7, "op": "ping", "args": {...}}
    agent  -> {"type": "reply", "id": 7, "ok": true, "result": {...}}
           |  {"type": "reply", "id": 7, "ok": false, "error": {"code": C, "message": M}}
    agent  -> {"type": "event", "event": {...}}        (any time after start)
    agent  -> {"type": "heartbeat", "ts": T}           (every ``heartbeat`` s)

H is HMAC-SHA256 in hex. Both sides prove the token, so a client cannot be
fooled by an impostor agent either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct

# Lean imports: the guest agent must reach its handshake fast, and pathlib, secrets
# and typing would bring a dozen more modules, each costing milliseconds under TCG.
TYPE_CHECKING = False  # not typing.TYPE_CHECKING: that would import typing
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 1
DEFAULT_PORT = 3001
MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolViolation(Exception):
    """Raised by the stdlib-only side; the host maps it to farm.errors.ProtocolError."""


def agent_version() -> str:
    """Version of this agent: package version plus a digest of the agent's source.

    Any change to the agent code changes it, so a guest image built from other
    code is detected at the handshake.
    """
    digest = hashlib.sha256()
    here = os.path.dirname(os.path.realpath(__file__))
    for name in sorted(n for n in os.listdir(here) if n.endswith(".py")):
        digest.update(name.encode())
        with open(os.path.join(here, name), "rb") as fh:
            digest.update(fh.read())
    return "1." + digest.hexdigest()[:12]


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message as a frame."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolViolation(f"frame of {len(body)} bytes exceeds limit {MAX_FRAME}")
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

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

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
            out.append(decode_body(body))
        return out


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes or raise ConnectionError on EOF."""
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        chunks += chunk
    return bytes(chunks)


def read_frame(sock: socket.socket, max_frame: int = MAX_FRAME) -> dict[str, Any]:
    """Blocking read of one message (uses the socket's own timeout)."""
    (length,) = _HEADER.unpack(recv_exact(sock, _HEADER.size))
    if length > max_frame:
        raise ProtocolViolation(f"frame of {length} bytes exceeds limit {max_frame}")
    return decode_body(recv_exact(sock, length))


def write_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def mac(token: str, role: str, nonce: str) -> str:
    """HMAC-SHA256 proving knowledge of the token for a role ('client' or 'agent')."""
    return hmac.new(token.encode(), f"{role}:{nonce}".encode(), hashlib.sha256).hexdigest()


def check_mac(token: str, role: str, nonce: str, value: object) -> bool:
    return isinstance(value, str) and hmac.compare_digest(mac(token, role, nonce), value)


def new_nonce() -> str:
    """128 random bits in hex (what ``secrets.token_hex(16)`` returns, without importing it)."""
    return os.urandom(16).hex()


def hello(nonce: str, heartbeat: float, version: str | None = None) -> dict[str, Any]:
    """The agent's greeting; ``version`` defaults to :func:`agent_version` (hashes the sources)."""
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "agent_version": agent_version() if version is None else version,
        "nonce": nonce,
        "heartbeat": heartbeat,
        "pid": os.getpid(),
    }


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


def client_handshake(sock: socket.socket, token: str) -> dict[str, Any]:
    """Run the client side of the greeting on a connected socket; return the hello.

    Raises ProtocolViolation (bad greeting, version) or PermissionError (token).
    """
    greeting = read_frame(sock)
    if greeting.get("type") != "hello":
        raise ProtocolViolation(f"expected hello, got {greeting.get('type')!r}")
    if greeting.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolViolation(
            f"agent speaks protocol {greeting.get('protocol')!r}, we speak {PROTOCOL_VERSION}"
        )
    cnonce = new_nonce()
    write_frame(
        sock,
        {
            "type": "auth",
            "protocol": PROTOCOL_VERSION,
            "mac": mac(token, "client", str(greeting.get("nonce"))),
            "cnonce": cnonce,
        },
    )
    answer = read_frame(sock)
    if answer.get("type") == "error":
        raise PermissionError(f"agent refused: {answer.get('message')}")
    if answer.get("type") != "welcome" or not check_mac(token, "agent", cnonce, answer.get("mac")):
        raise PermissionError("agent failed to prove the token (impostor or wrong token)")
    return greeting


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
