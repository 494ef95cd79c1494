"""TCP listener of the agent: accepts clients, one thread per connection, capped.

The accept loop runs in the caller's thread and sleeps in a selector on the
listening socket and a stop pipe (written by signal handlers), so SIGTERM is
handled at once. The listening socket may be handed over ready-made (a file
descriptor): a client that connects while the agent still imports its
modules then waits in the kernel's backlog instead of being refused and
retrying later. Connections beyond ``max_connections`` get
``{"type": "error", "code": "busy"}`` and are closed (clients retry).

Handshakes have their own small budget: at most ``max_unauthed`` connections
wait for their auth frame (``per_source`` of them from one address), each for
``auth_timeout`` seconds at most. A new connection beyond either cap evicts
the oldest waiting one (of that source, else of all), so idle or trickling
strangers can neither fill the authenticated slots nor keep an honest client
from authenticating: the newest handshake always gets its chance. The loop can run a
deferred set-up step once (``on_idle``: the agent's logging) when no client
has arrived for a moment, so it stays off the first handshake's path.
"""

from __future__ import annotations

import _socket  # not socket: its IntEnum conversion of every AF_/SOCK_/MSG_ constant
import os  # costs ~3 M instructions (tens of ms under TCG) before the first handshake
import select  # not selectors: ~0.75 M instructions of imports for two descriptors
import threading
import time

from farm.agent import logs, protocol
from farm.agent.connection import Connection

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is slow to import in a TCG guest
if TYPE_CHECKING:
    from collections.abc import Callable

    from farm.agent.service import AgentService

log = logs.get_logger(__name__)

MAX_CONNECTIONS = 64
MAX_UNAUTHED = 16
PER_SOURCE = 8
BACKLOG = 128
AUTH_TIMEOUT = 3.0
JOIN_TIMEOUT = 5.0
FLUSH_TIMEOUT = 2.0
#: ``on_idle`` runs after this long without a new client, or this long after serving began
IDLE_AFTER, IDLE_AT_THE_LATEST = 0.5, 2.0


class AgentServer:
    """Listens on ``host:port`` (port 0 = any free port) and serves clients."""

    def __init__(
        self,
        service: AgentService,
        token: str | None,
        host: str = "127.0.0.1",
        port: int = protocol.DEFAULT_PORT,
        heartbeat: float = 1.0,
        max_connections: int = MAX_CONNECTIONS,
        auth_timeout: float = AUTH_TIMEOUT,
        listen_fd: int | None = None,
        guest: str | None = None,
        max_unauthed: int = MAX_UNAUTHED,
        per_source: int = PER_SOURCE,
    ) -> None:
        """``listen_fd``: serve this socket, already bound and listening, instead of
        binding ``host:port`` (the guest's /init binds it before the agent's imports).
        ``token`` None: no key yet (a warm-start template listens before its guest's
        identity arrives); :meth:`set_key` gives it, and nothing is accepted before.
        """
        self._service = service
        self._token = token
        self._guest = guest
        self._max_unauthed = max(1, max_unauthed)
        self._per_source = max(1, per_source)
        self._heartbeat = heartbeat
        self._max = max_connections
        self._auth_timeout = auth_timeout
        self._sock: _socket.socket
        if listen_fd is not None:
            self._sock = _socket.socket(fileno=listen_fd)
        else:  # not the guest's path (its /init binds first): socket's conveniences are fine
            import socket

            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self._lock = threading.Lock()
        self._conns: dict[Connection, threading.Thread] = {}

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def set_key(self, token: str, guest: str | None = None) -> None:
        """The key (and guest name) clients must authenticate with, given after listening."""
        if not token:
            raise ValueError("an empty token would let anybody in")
        self._token, self._guest = token, guest

    def serve_forever(self, stop_fd: int, on_idle: Callable[[], None] | None = None) -> None:
        """Accept clients until ``stop_fd`` becomes readable; call ``on_idle`` once (see above)."""
        if not self._token:  # no accept without the key: connections wait in the backlog
            raise RuntimeError("serve_forever() before set_key(): nobody could authenticate")
        latest = time.monotonic() + IDLE_AT_THE_LATEST
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        poller.register(stop_fd, select.POLLIN)
        while True:
            timeout_ms = None
            if on_idle is not None:
                timeout_ms = 1000 * max(0.0, min(IDLE_AFTER, latest - time.monotonic()))
            events = poller.poll(timeout_ms)
            for fd, flags in events:
                if fd == stop_fd or flags & select.POLLNVAL:  # stop, or closed under us
                    return
                self._accept()
            if on_idle is not None and (not events or time.monotonic() >= latest):
                on_idle()
                on_idle = None

    def _accept(self) -> None:
        listener = self._sock
        assert self._token, "accepting without a key"  # (serve_forever checks it first)
        try:  # what socket.socket.accept does, on the plain _socket type
            fd, addr = listener._accept()  # type: ignore[attr-defined]
        except OSError as exc:  # e.g. EMFILE, ECONNABORTED: keep serving
            log.warning("accept failed: %s", exc)
            return
        sock = _socket.socket(listener.family, listener.type, listener.proto, fileno=fd)
        peer = f"{addr[0]}:{addr[1]}"
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
        with self._lock:
            self._make_room(str(addr[0]))
            authed = sum(1 for c in self._conns if c.authenticated)
            full = authed >= self._max
            if not full:
                conn = Connection(
                    sock,
                    peer,
                    self._service,
                    self._token,
                    self._heartbeat,
                    self._auth_timeout,
                    self._closed,
                    self._guest,
                )
                thread = threading.Thread(target=conn.run, name=f"conn-{peer}", daemon=True)
                self._conns[conn] = thread
        if full:
            log.warning("%s: refused, %d connections open", peer, self._max)
            try:
                sock.settimeout(1.0)
                sock.sendall(protocol.encode(protocol.error("busy", "too many connections")))
            except OSError:
                pass
            sock.close()
            return
        log.info("%s: connected", peer)
        thread.start()

    def _make_room(self, source: str) -> None:
        """Evict the oldest handshake of ``source`` (or of all) when a cap is reached (locked)."""
        waiting = sorted(
            (c for c in self._conns if not c.authenticated and not c.evicted),
            key=lambda c: c.opened,
        )
        mine = [c for c in waiting if c.source == source]
        victim = None
        if len(mine) >= self._per_source:
            victim = mine[0]
        elif len(waiting) >= self._max_unauthed:
            victim = waiting[0]
        if victim is not None:
            log.warning("%s: handshake evicted (too many unauthenticated connections)", victim.name)
            victim.evicted = True  # counted as gone from now on; it only closes
            victim.abort()

    def _closed(self, conn: Connection) -> None:
        with self._lock:
            self._conns.pop(conn, None)
        log.info("%s: disconnected", conn.name)

    def connections(self) -> int:
        """Number of open connections (authenticated or not)."""
        with self._lock:
            return len(self._conns)

    def close(self) -> None:
        """Stop listening, break every connection and wait (bounded) for their threads."""
        self._sock.close()
        with self._lock:
            conns = list(self._conns.items())
        deadline = time.monotonic() + FLUSH_TIMEOUT
        for conn, _ in conns:
            conn.close_gracefully()  # last events (EXIT_EXTERNAL) still reach the client
        for conn, _ in conns:
            conn.flushed(max(0.0, deadline - time.monotonic()))
        for conn, _ in conns:
            conn.abort()
        for _, thread in conns:
            thread.join(JOIN_TIMEOUT)


def make_stop_pipe() -> tuple[int, int]:
    """A non-blocking pipe whose read end :meth:`AgentServer.serve_forever` watches."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    return r, w
