"""One client connection: handshake, framed requests, queued replies/events, heartbeats.

Threads: a reader (this connection's ``run``) that authenticates the client
and executes its requests in order, and, once authenticated, a writer that
sends a heartbeat every ``heartbeat`` seconds and the frames that could not
go out at once. A reply or event is sealed and written by the thread that
sends it (the reader, a set's scheduler) when nothing waits before it and the
socket takes it whole without blocking; otherwise it is queued for the
writer, and so is every later frame until the writer caught up (order kept).
So a ping's reply or a set's JOBS_DONE costs no thread switch on its way out:
a switch to the writer waited for the GIL while the scheduler still finished
its set (reaping, cgroup), on the path of the next set's dispatch. Nothing a
client sends can stop the agent: every failure ends at most this connection.

* before auth: ``hello`` is sent; the ``auth`` frame must arrive within
  ``auth_timeout`` seconds in a frame of at most ``PREAUTH_MAX_FRAME`` bytes.
  Anything else -> ``{"type": "error", "code": "auth"}`` and close (``protocol``
  for a version mismatch, naming both versions). A client without the key
  gets nothing done.
* after auth every frame is sealed (protocol.Tagger): a frame whose tag does
  not verify (forged, altered, replayed, reordered) -> ``error auth`` and close.
  A frame whose body is not a JSON object with a type ->
  ``error bad_frame`` (connection kept); a length above ``MAX_FRAME`` ->
  ``error bad_frame`` and close (the stream cannot be resynchronised); a
  frame that is not a request or lacks a usable id -> ``error bad_request``;
  a request whose op/args are malformed -> reply error ``bad_request``.
* a client that does not read its frames (writer blocked for ``IO_TIMEOUT``
  or more than ``MAX_QUEUE`` frames queued) is disconnected.
"""

from __future__ import annotations

import _socket  # not socket: see farm.agent.server
import os
import queue
import threading
import time

from farm.agent import logs, protocol
from farm.agent.service import RequestError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is slow to import in a TCG guest
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from farm.agent.service import AgentService

log = logs.get_logger(__name__)

PREAUTH_MAX_FRAME = protocol.PREAUTH_MAX_FRAME
IO_TIMEOUT = 30.0
PREAUTH_SEND_TIMEOUT = 5.0
FLUSH_GRACE = 2.0
MAX_QUEUE = 10_000
#: frames sent with one sendall at most (bounds the memory of one join)
MAX_BATCH = 64
MAX_BATCH_BYTES = 256 * 1024
MAX_ID_LEN = 256
#: bytes one recv may take beyond the frame being read (kept for the next one)
READ_AHEAD = 64 * 1024
_HEADER = 4


class _Closed(Exception):
    """The connection is over (EOF, reset, timeout mid-frame, or our own decision)."""


class _Timeout(_Closed):
    """The peer was too slow."""


class _FatalFrame(protocol.ProtocolViolation):
    """A framing error after which the stream cannot be trusted."""


_CLOSE = object()


class Connection:
    """Serves one client socket; ``run`` is the reader thread's body."""

    def __init__(
        self,
        sock: _socket.socket,
        peer: str,
        service: AgentService,
        token: str,
        heartbeat: float,
        auth_timeout: float,
        on_close: Callable[[Connection], None],
        guest: str | None = None,
    ) -> None:
        self.name = peer
        self.source = peer.rsplit(":", 1)[0]
        self.authenticated = False
        self.evicted = False
        self.opened = time.monotonic()
        self._guest = guest
        self._sender: protocol.Tagger | None = None
        self._receiver: protocol.Tagger | None = None
        self._sock = sock
        self._service = service
        self._token = token
        self._heartbeat = heartbeat
        self._auth_timeout = auth_timeout
        self._on_close = on_close
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUE)
        self._closed = threading.Event()
        self._writer: threading.Thread | None = None
        # sealing and the choice "write now or queue" happen under _wlock: tags count
        # frames in the order they reach the socket
        self._wlock = threading.Lock()
        self._backlog = 0  # frames queued for the writer and not yet written
        self._fd = -1  # >= 0 once the writer runs: frames may then be written directly
        self._draining = False  # close_gracefully(): nothing more goes out
        self._rbuf = bytearray()  # received, not yet framed (the reader's only)

    # -- used by the service (any thread) ------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Seal a frame and write it now, else queue it for the writer; never blocks.

        Written here only if no queued frame waits before it and the socket (non-
        blocking: it has a timeout) takes all of it; what is left goes to the writer.
        A full queue (a client that does not read) drops the client.
        """
        if self._closed.is_set():
            return
        with self._wlock:
            if self._draining or self._sender is None:
                return  # after close_gracefully / before the handshake (_send_now then)
            try:
                frame = self._sender.seal(protocol.dumps(message))
            except (protocol.ProtocolViolation, TypeError, ValueError):
                log.exception(
                    "%s: cannot encode a %s frame; dropped", self.name, message.get("type")
                )
                return
            if self._backlog == 0 and self._fd >= 0:
                try:
                    sent = os.write(self._fd, frame)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    log.debug("%s: write failed: %s", self.name, exc)
                    self.abort()
                    return
                if sent == len(frame):
                    return
                frame = frame[sent:]
            try:
                self._queue.put_nowait(frame)
            except queue.Full:
                log.warning("%s: not reading its frames; disconnecting", self.name)
                self.abort()
                return
            self._backlog += 1

    def close_gracefully(self) -> None:
        """Stop after the frames sent so far (a last event, an error) have gone out."""
        with self._wlock:
            self._draining = True
        try:
            self._queue.put_nowait(_CLOSE)
        except queue.Full:
            self.abort()

    def flushed(self, timeout: float) -> bool:
        """Wait until the writer has ended (after :meth:`close_gracefully`)."""
        if self._writer is None:
            return True
        self._writer.join(timeout)
        return not self._writer.is_alive()

    def abort(self) -> None:
        """Break the connection from any thread (the reader then cleans up)."""
        self._closed.set()
        try:
            self._sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    # -- reader thread --------------------------------------------------------

    def run(self) -> None:
        """Handshake, then serve requests until the client leaves or misbehaves."""
        authed = False
        try:
            authed = self._handshake()
            if authed:
                self._service.attach(self)
                self._sock.settimeout(IO_TIMEOUT)  # (and so O_NONBLOCK: see send)
                writer = threading.Thread(
                    target=self._write_loop, name=f"writer-{self.name}", daemon=True
                )
                writer.start()  # then published: flushed() must never join an unstarted thread
                self._writer = writer
                with self._wlock:
                    self._fd = self._sock.fileno()
                self._serve()
        except _Closed:
            pass
        except Exception:
            log.exception("%s: connection failed", self.name)
        finally:
            self._closed.set()
            if authed:
                self._service.detach(self)
            self._finish()

    def _finish(self) -> None:
        if self._writer is not None:
            try:
                self._queue.put_nowait(_CLOSE)
            except queue.Full:
                pass
            self._writer.join(FLUSH_GRACE)  # let queued frames (a last error) go out
            self.abort()
            self._writer.join(IO_TIMEOUT + 1)
        with self._wlock:  # no send() writes to the fd from now on: its number may be reused
            self._fd = -1
        try:
            self._sock.close()
        except OSError:
            pass
        self._on_close(self)

    def _send_now(self, message: dict[str, Any]) -> bytes:
        """Send directly (only before the writer exists); return the frame's body."""
        frame = protocol.encode(message)
        try:
            self._sock.settimeout(PREAUTH_SEND_TIMEOUT)
            self._sock.sendall(frame)
        except OSError as exc:
            raise _Closed() from exc
        return frame[_HEADER:]

    def _handshake(self) -> bool:
        nonce = protocol.new_nonce()
        deadline = time.monotonic() + self._auth_timeout
        self._sock.settimeout(self._auth_timeout)
        greeting = protocol.hello(nonce, self._heartbeat, self._service.version, self._guest)
        hello_body = self._send_now(greeting)
        try:
            auth = self._read_frame(PREAUTH_MAX_FRAME, deadline)
        except _Timeout:
            self._send_now(protocol.error("auth", "no auth frame in time"))
            return False
        except _FatalFrame as exc:
            self._send_now(protocol.error("auth", f"bad frame before auth: {exc}"))
            return False
        except protocol.ProtocolViolation as exc:
            self._send_now(protocol.error("auth", f"expected an auth frame: {exc}"))
            return False
        if auth.get("type") != "auth":
            self._send_now(protocol.error("auth", "expected an auth frame"))
            return False
        if auth.get("protocol") != protocol.PROTOCOL_VERSION:
            self._send_now(
                protocol.error(
                    "protocol",
                    f"client speaks protocol {auth.get('protocol')!r}, this agent speaks "
                    f"{protocol.PROTOCOL_VERSION} only (update farm or rebuild the image)",
                )
            )
            return False
        cnonce = auth.get("cnonce")
        if not isinstance(cnonce, str) or not 0 < len(cnonce) <= MAX_ID_LEN or not cnonce.isascii():
            self._send_now(protocol.error("auth", "auth needs a cnonce string"))
            return False
        secret = protocol.session_secret(self._token, hello_body, cnonce)
        if not protocol.check_proof(secret, "client", auth.get("mac")):
            log.warning("%s: authentication failed (wrong key)", self.name)
            self._send_now(protocol.error("auth", "authentication failed"))
            return False
        # counted as authenticated before the client can know it is (the server's cap
        # on authenticated connections must see it when the client's next one arrives)
        self.authenticated = True
        self._send_now(
            {
                "type": "welcome",
                "mac": protocol.proof(secret, "agent"),
                "heartbeat": self._heartbeat,
                "agent_version": self._service.version,
            }
        )
        self._sender, self._receiver = protocol.directions(secret, agent=True)
        log.info("%s: authenticated", self.name)
        return True

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                message = self._read_frame(protocol.MAX_FRAME + protocol.TAG_LEN, None)
            except protocol.BadTag as exc:
                log.warning("%s: %s; disconnecting", self.name, exc)
                self.send(protocol.error("auth", str(exc)))
                return
            except _FatalFrame as exc:
                self.send(protocol.error("bad_frame", str(exc)))
                return
            except protocol.ProtocolViolation as exc:
                self.send(protocol.error("bad_frame", str(exc)))
                continue
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "request":
            self.send(protocol.error("bad_request", f"unexpected frame {message['type']!r}"))
            return
        rid = message.get("id")
        if isinstance(rid, bool) or not isinstance(rid, int | str) or rid == "":
            self.send(protocol.error("bad_request", "request needs an id (integer or string)"))
            return
        if isinstance(rid, str) and len(rid) > MAX_ID_LEN:
            self.send(protocol.error("bad_request", "request id too long"))
            return
        op, args = message.get("op"), message.get("args", {})
        if args is None:
            args = {}
        if not isinstance(op, str):
            self.send(protocol.error("bad_request", "op must be a string", rid))
            return
        if not isinstance(args, dict):
            self.send(protocol.error("bad_request", "args must be an object", rid))
            return
        try:
            outcome = self._service.handle(self, op, args)
        except RequestError as exc:
            self.send(protocol.error(exc.code, exc.message, rid))
            return
        except Exception as exc:
            log.exception("%s: op %s failed", self.name, op)
            self.send(protocol.error("internal", f"{type(exc).__name__}: {exc}", rid))
            return
        try:
            self.send(protocol.reply(rid, outcome.result))
        finally:
            if outcome.then is not None:
                outcome.then()

    # -- framing ---------------------------------------------------------------

    def _recv_exact(self, n: int, deadline: float | None, idle_ok: bool) -> bytes:
        """Read n bytes; ``idle_ok`` lets an idle wait before the first byte last forever.

        Once authenticated, each recv asks for up to ``READ_AHEAD`` bytes and keeps
        what it got beyond ``n`` for the next call: a request's header and body then
        cost one recv, not two (a syscall is tens of microseconds under TCG).
        """
        buf = self._rbuf
        ahead = READ_AHEAD if self._receiver is not None else 0  # before auth: exact reads
        while len(buf) < n:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Timeout("timed out")
                self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(min(max(n - len(buf), ahead), 1 << 20))
            except TimeoutError as exc:
                if idle_ok and not buf and not self._closed.is_set():
                    continue
                raise _Timeout("timed out mid-frame") from exc
            except OSError as exc:
                raise _Closed(str(exc)) from exc
            if not chunk:
                raise _Closed("closed by peer")
            buf += chunk
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def _read_frame(self, max_frame: int, deadline: float | None) -> dict[str, Any]:
        header = self._recv_exact(_HEADER, deadline, idle_ok=deadline is None)
        length = int.from_bytes(header, "big")
        if length > max_frame:
            raise _FatalFrame(f"frame of {length} bytes exceeds limit {max_frame}")
        body = self._recv_exact(length, deadline, idle_ok=False)
        if self._receiver is not None:
            body = self._receiver.open(body)
        try:
            return protocol.decode_body(body)
        except RecursionError as exc:
            raise protocol.ProtocolViolation("frame nests too deeply") from exc

    # -- writer thread ---------------------------------------------------------

    def _write_loop(self) -> None:
        beat = self._heartbeat
        next_beat = time.monotonic() + beat if beat > 0 else None
        try:
            while True:
                now = time.monotonic()
                if next_beat is not None and now >= next_beat:
                    self.send({"type": "heartbeat", "ts": now})
                    next_beat = now + beat
                timeout = None if next_beat is None else max(0.0, next_beat - now)
                try:
                    message = self._queue.get(timeout=timeout)
                except queue.Empty:
                    continue
                if message is _CLOSE:
                    return
                # what else is queued goes out in the same send: a set's reply and
                # START, or EXIT and JOBS_DONE, then cost one segment, not two (each
                # one is guest CPU under TCG: syscall, TCP, virtio, slirp, ACK)
                batch = [message]
                closing = False
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _CLOSE:
                        closing = True
                        break
                    batch.append(more)
                self._write(batch)
                with self._wlock:
                    self._backlog -= len(batch)  # all out: the next frame may go directly
                if closing:
                    return
        except _Closed:
            self.abort()

    def _write(self, frames: list[bytes]) -> None:
        pending: list[bytes] = []
        size = 0
        for frame in frames:  # joined up to MAX_BATCH_BYTES: big frames are not copied
            if pending and size + len(frame) > MAX_BATCH_BYTES:
                self._send(pending)
                pending, size = [], 0
            pending.append(frame)
            size += len(frame)
        if pending:
            self._send(pending)

    def _send(self, frames: list[bytes]) -> None:
        try:
            self._sock.sendall(frames[0] if len(frames) == 1 else b"".join(frames))
        except OSError as exc:
            raise _Closed(str(exc)) from exc
