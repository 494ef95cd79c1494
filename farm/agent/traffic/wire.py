"""Framed messages: 16-byte header (payload length, flags, sequence) plus payload."""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct(">IIQ")  # payload length, flags, sequence number
FLAG_ACK = 1
MAX_SIZE = 16 * 1024 * 1024


def recv_exact(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view``; False on a clean end of stream before the first byte."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            if got == 0:
                return False
            raise ConnectionError(f"stream ended after {got} of {len(view)} bytes")
        got += n
    return True


class Buffer:
    """A growing scratch buffer (payloads are zeros; only lengths matter)."""

    def __init__(self) -> None:
        self.data = bytearray(65536)

    def view(self, size: int) -> memoryview:
        if size > len(self.data):
            self.data = bytearray(size)
        return memoryview(self.data)[:size]


def exchange(sock: socket.socket, seq: int, size: int, buf: Buffer) -> int:
    """Send one message, read its answer; return the payload bytes received back."""
    sock.sendmsg([HEADER.pack(size, 0, seq), buf.view(size)])
    head = bytearray(HEADER.size)
    if not recv_exact(sock, memoryview(head)):
        raise ConnectionError("server closed the connection")
    length, flags, rseq = HEADER.unpack(head)
    if rseq != seq or length not in (0, size) or (length == 0 and size and not flags & FLAG_ACK):
        raise ConnectionError(f"bad answer to message {seq}: length {length} seq {rseq}")
    if length and not recv_exact(sock, buf.view(length)):
        raise ConnectionError("server closed the connection mid-answer")
    return length
