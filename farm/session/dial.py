"""Dialling a booting agent: staggered connections, the first that is greeted wins.

A single connection attempt is the wrong probe for a guest that is still
booting. QEMU's user-mode network (slirp) accepts a connection to a hostfwd
port at once, even before the guest's NIC is up, and forwards it as a SYN the
guest never sees; the connection then hangs silently until the attempt times
out (measured: every attempt made before the guest's network was up waited
its whole budget, so the handshake came 0.1-0.5 s after the agent was ready).
A bridged guest's address behaves alike before it answers ARP.

:func:`connect_greeted` therefore keeps a few connections open at once: while
no peer has answered it opens another every ``stagger`` seconds; beyond
``max_open`` each new one replaces the oldest. (A growing stagger would
bring back the wait it is there to avoid: a boot slowed by a busy host
would again find the agent ready up to a whole stagger late.)
A connection that is closed or refused shows the guest's network is up
(its kernel answered: the port is not bound yet); from then on one
connection at a time is enough, re-opened ``pause`` seconds after each
refusal, and it waits in the agent's listen backlog once the port is bound.
The first connection on which the agent's greeting arrives is returned (its
bytes still unread); the others are closed.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time

log = logging.getLogger(__name__)

#: seconds between new connections while none was answered (not even refused)
STAGGER = 0.1
#: connections open at once while none was answered (the agent caps handshakes per
#: source at 8); beyond it the oldest is closed for a new one
MAX_OPEN = 5
#: seconds before re-dialling after a refusal (the guest's port is not bound yet)
PAUSE = 0.02


def connect_greeted(
    host: str,
    port: int,
    timeout: float,
    *,
    stagger: float = STAGGER,
    max_open: int = MAX_OPEN,
    pause: float = PAUSE,
) -> socket.socket:
    """A blocking socket to ``host:port`` whose peer has sent its first bytes (unread).

    Raises TimeoutError when no connection is greeted within ``timeout``
    seconds, or the last connection error (OSError) if every attempt failed.
    """
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, bool] = {}  # socket -> opened after the network was up
    answered = False  # some connection was refused or closed: the guest's network is up
    next_open = time.monotonic()
    last: OSError | None = None
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                if last is not None and not pending:
                    raise last
                raise TimeoutError(f"{host}:{port}: no greeting within {timeout:g} s")
            fresh = sum(1 for late in pending.values() if late)
            wanted = fresh == 0 if answered else True
            if wanted and now >= next_open:
                if not answered and len(pending) >= max(1, max_open):
                    oldest = next(iter(pending))  # silent longest: likely lost in the void
                    sel.unregister(oldest)
                    del pending[oldest]
                    oldest.close()
                try:
                    sock = _open(host, port)
                except OSError as exc:  # refused at once (loopback), no route, ...
                    last = exc
                    answered = answered or exc.errno in _ANSWERED
                    next_open = now + (pause if answered else stagger)
                    continue
                pending[sock] = answered
                sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                next_open = now + (pause if answered else stagger)
                continue
            wake = deadline if not wanted else min(deadline, next_open)
            for key, _ in sel.select(max(0.0, wake - now)):
                sock = key.fileobj  # type: ignore[assignment]
                assert isinstance(sock, socket.socket)
                outcome = _probe(sock)
                if outcome is False:  # connected, nothing to read yet
                    sel.modify(sock, selectors.EVENT_READ)
                    continue
                if outcome is True:
                    sel.unregister(sock)
                    del pending[sock]
                    sock.setblocking(True)
                    return sock
                last = outcome
                if outcome.errno in _ANSWERED and not answered:
                    answered = True
                    next_open = time.monotonic() + pause
                sel.unregister(sock)
                del pending[sock]
                sock.close()
    finally:
        for sock in pending:
            sock.close()
        sel.close()


#: errors that show something answered for the guest's address (its network is up)
_ANSWERED: tuple[int, ...] = (errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE)


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
