"""Dialling a booting agent: staggered connections, the first that is greeted wins.

A single connection attempt is the wrong probe for a guest that is still
booting. QEMU's user-mode network (slirp) accepts a connection to a hostfwd
port at once, even before the guest's NIC is up, and forwards it as a SYN the
guest never sees; the connection then hangs silently until the attempt times
out (measured: every attempt made before the guest's network was up waited
its whole budget, so the handshake came 0.1-0.5 s after the agent was ready).
A bridged guest's address behaves alike before it answers ARP.

:func:`connect_greeted` therefore keeps a few connections open at once:
while none has answered it opens another every ``stagger`` seconds; beyond
``max_open`` each new one replaces the oldest. The first connection on which
the agent's greeting arrives is returned (its bytes still unread), the
others are closed. A refusal (the guest's network is up, its port not bound
yet) or a connection closed before a byte ends the call at once, as a
single attempt would: the caller pauses, checks its guest and dials again;
once the port is bound a new connection waits in the agent's listen backlog.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time

log = logging.getLogger(__name__)

#: seconds between new connections while none has answered
STAGGER = 0.1
#: connections open at once (the agent caps handshakes per source at 8); beyond it
#: the oldest is closed for a new one
MAX_OPEN = 5


def connect_greeted(
    host: str,
    port: int,
    timeout: float,
    *,
    stagger: float = STAGGER,
    max_open: int = MAX_OPEN,
) -> socket.socket:
    """A blocking socket to ``host:port`` whose peer has sent its first bytes (unread).

    Raises the first failure of a connection at once (refused, reset, closed
    before a byte, unreachable: the caller decides when to retry and whether
    its guest still lives), or TimeoutError when every connection stayed
    silent for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    pending: list[socket.socket] = []
    next_open = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"{host}:{port}: no greeting within {timeout:g} s")
            if now >= next_open:
                if len(pending) >= max(1, max_open):
                    oldest = pending.pop(0)  # silent longest: likely lost in the void
                    sel.unregister(oldest)
                    oldest.close()
                sock = _open(host, port)
                pending.append(sock)
                sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                next_open = now + stagger
            for key, _ in sel.select(max(0.0, min(deadline, next_open) - time.monotonic())):
                sock = key.fileobj  # type: ignore[assignment]
                assert isinstance(sock, socket.socket)
                outcome = _probe(sock)
                if outcome is False:  # connected, nothing to read yet
                    sel.modify(sock, selectors.EVENT_READ)
                    continue
                sel.unregister(sock)
                pending.remove(sock)
                if outcome is True:
                    sock.setblocking(True)
                    return sock
                sock.close()
                raise outcome
    finally:
        for sock in pending:
            sock.close()
        sel.close()


def _open(host: str, port: int) -> socket.socket:
    """Start a non-blocking connection (IPv4 or IPv6 literal or name)."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    err = sock.connect_ex(addr)
    if err not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
        sock.close()
        raise OSError(err, f"connect to {host}:{port}: {errno.errorcode.get(err, err)}")
    return sock


def _probe(sock: socket.socket) -> bool | OSError:
    """True: data waits; False: connected, silent; an OSError: refused, reset or closed."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        return OSError(err, errno.errorcode.get(err, str(err)))
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        return exc
    if not data:
        return ConnectionResetError(errno.ECONNRESET, "closed before the greeting")
    return True
