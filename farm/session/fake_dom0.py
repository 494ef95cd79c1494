"""FakeDom0Server: the target side of the Genode Taskloader protocol, on loopback.

A faithful stand-in for a Genode dom0 for tests and demos: it listens on
127.0.0.1 (port 0 = any free port), speaks every command byte for byte (see
farm.session.genode_wire), records what it received (commands, description
XML and its parsed tasks, binaries with names/sizes/contents, OPTIMIZE XML),
and on START pushes a realistic profile for the received tasks: START and
EXIT/EXIT_CRITICAL per job, JOBS_DONE per task (farm.session.simulate).
Profiles are pushed in messages of ``batch_sizes`` events, cycling (default
1, 4: single-event profiles alternate with multi-event ones), optionally
split into ``fragment``-byte writes, NUL-terminated as Genode strings are.
STOP ends the run with EXIT_EXTERNAL for every started, unfinished job.
REBOOT drops the connection and forgets the binaries (``record.reboots``).
``silent_after=N``: each run pushes N events, then the target says nothing
more and ignores every command (a hung guest). ``python -m
farm.session.fake_dom0 --port P`` serves on all addresses until killed.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from farm.events import Event, EventType
from farm.session.genode_wire import (
    BINARY_HEADER,
    WORD,
    Command,
    ProfileEvent,
    element_to_dict,
    parse_binary_header,
    parse_xml,
    profile_xml,
    recv_exact,
    word,
)
from farm.session.simulate import simulate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedBinary:
    """One binary as the fake target received it."""

    name: str
    size: int
    data: bytes


@dataclass
class Dom0Record:
    """Everything the fake target received (append-only; read under ``server.lock``)."""

    commands: list[int] = field(default_factory=list)
    descs: list[str] = field(default_factory=list)
    tasks: list[list[dict[str, Any]]] = field(default_factory=list)
    binaries: list[ReceivedBinary] = field(default_factory=list)
    optimize: list[str] = field(default_factory=list)
    pushed: list[ProfileEvent] = field(default_factory=list)
    connections: int = 0
    reboots: int = 0
    errors: list[str] = field(default_factory=list)


class _Run:
    """One START: the pusher thread and its stop switch."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.open: dict[tuple[int, int], int] = {}  # (task, job) -> start stamp
        self.thread: threading.Thread | None = None
        self.last_stamp = 0
        self.began = time.monotonic()


class FakeDom0Server:
    """Genode dom0 Taskloader stand-in on 127.0.0.1 (one thread per connection)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        batch_sizes: Sequence[int] = (1, 4),
        fragment: int | None = None,
        time_scale: float = 0.0,
        nul_terminate: bool = True,
        max_events: int = 10_000,
        silent_after: int | None = None,
    ) -> None:
        """``time_scale``: wall seconds per simulated second (0 = push at once)."""
        if not batch_sizes or min(batch_sizes) < 1:
            raise ValueError("batch_sizes must be positive")
        self.batch_sizes = tuple(batch_sizes)
        self.fragment = fragment
        self.time_scale = time_scale
        self.nul_terminate = nul_terminate
        self.max_events = max_events
        self.silent_after = silent_after
        self.hung = threading.Event()  # set once a run went silent (silent_after)
        self.record = Dom0Record()
        self.lock = threading.Condition()
        self._listener = socket.create_server((host, port))
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._runs: list[_Run] = []
        self._acceptor = self._spawn(self._accept_loop, "fake-dom0-accept")

    # -- lifecycle -------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the fake listens on."""
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def port(self) -> int:
        return self.address[1]

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self.lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop every run, drop every connection and join every thread; idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._wake_w.send(b"x")
        with self.lock:
            runs, conns = list(self._runs), list(self._conns)
        for run in runs:
            run.stop.set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(10)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait_for(self, predicate: Callable[[Dom0Record], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(record)`` holds (re-checked on every change)."""
        with self.lock:
            return self.lock.wait_for(lambda: predicate(self.record), timeout)

    def _note(self, what: str, *values: Any) -> None:
        """Append ``values`` to the record's list ``what`` (or bump a counter) and notify."""
        with self.lock:
            target = getattr(self.record, what)
            if isinstance(target, int):
                setattr(self.record, what, target + 1)
            else:
                target.extend(values)
            self.lock.notify_all()

    # -- serving ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._closing.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    conn, _addr = self._listener.accept()
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with self.lock:
                        self._conns.append(conn)
                    self._note("connections")
                    self._spawn(self._serve, "fake-dom0-conn", conn)

    def _serve(self, conn: socket.socket) -> None:
        send_lock = threading.Lock()
        run: _Run | None = None
        tasks: list[dict[str, Any]] = []
        try:
            while not self._closing.is_set():
                (command,) = WORD.unpack(recv_exact(conn, WORD.size))
                if self.hung.is_set():
                    continue  # a hung target reads but never answers
                self._note("commands", command)
                if command == Command.REBOOT:
                    self._note("reboots")
                    with self.lock:
                        self.record.binaries.clear()
                    return
                if command == Command.AVAILABLE:
                    with send_lock:
                        conn.sendall(word(Command.AVAILABLE))
                elif command in (Command.CLEAR, Command.STOP):
                    if run is not None:
                        self._finish(run, conn, send_lock, external=command == Command.STOP)
                        run = None
                elif command == Command.SEND_DESCS:
                    xml = self._document(conn)
                    root = parse_xml(xml)
                    tasks = [element_to_dict(node) for node in root.iter("periodictask")]
                    self._note("descs", xml)
                    self._note("tasks", tasks)
                elif command == Command.OPTIMIZE:
                    xml = self._document(conn)
                    self._note("optimize", xml)
                elif command == Command.SEND_BINARIES:
                    (count,) = WORD.unpack(recv_exact(conn, WORD.size))
                    for _ in range(count):
                        with send_lock:
                            conn.sendall(word(Command.GO_SEND))
                        name, size = parse_binary_header(recv_exact(conn, BINARY_HEADER.size))
                        data = recv_exact(conn, size)
                        binary = ReceivedBinary(name, size, data)
                        self._note("binaries", binary)
                elif command == Command.START:
                    if run is not None:
                        self._finish(run, conn, send_lock, external=True)
                    run = _Run()
                    with self.lock:
                        self._runs.append(run)
                    run.thread = self._spawn(
                        self._push, "fake-dom0-push", run, conn, send_lock, tasks
                    )
                else:
                    self._note("errors", f"unknown command {command:#x}")
                    return
        except OSError as exc:
            if not self._closing.is_set():
                log.debug("fake dom0 connection ended: %s", exc)
        except Exception as exc:  # malformed input: record it, drop the connection
            log.debug("fake dom0 rejected input: %s", exc)
            message = f"{type(exc).__name__}: {exc}"
            self._note("errors", message)
        finally:
            if run is not None:
                run.stop.set()
                if run.thread is not None and run.thread is not threading.current_thread():
                    run.thread.join(10)
            conn.close()

    def _document(self, conn: socket.socket) -> str:
        (length,) = WORD.unpack(recv_exact(conn, WORD.size))
        return recv_exact(conn, length).decode("ascii")

    # -- pushing profiles ------------------------------------------------------------

    def _events(self, tasks: list[dict[str, Any]]) -> Iterator[tuple[float, Event]]:
        limit = self.max_events
        if self.silent_after is not None:
            limit = min(limit, self.silent_after)
        return itertools.islice(simulate(tasks), limit)

    def _push(
        self, run: _Run, conn: socket.socket, send_lock: threading.Lock, tasks: list[dict[str, Any]]
    ) -> None:
        sizes = itertools.cycle(self.batch_sizes)
        stream = self._events(tasks)
        try:
            while not run.stop.is_set():
                batch = list(itertools.islice(stream, next(sizes)))
                if not batch:
                    if self.silent_after is not None:
                        log.info("fake dom0: silent after %d event(s)", self.silent_after)
                        self.hung.set()
                    return
                due = batch[-1][0] / 1000.0 * self.time_scale
                if due > 0 and run.stop.wait(due - (time.monotonic() - run.began)):
                    return
                raw: list[ProfileEvent] = []
                for stamp, event in batch:
                    raw.append((event.task_id, str(event.type), round(stamp)))
                    key = (event.task_id, event.job if event.job is not None else -1)
                    if event.type is EventType.START:
                        run.open[key] = round(stamp)
                    elif event.is_exit:
                        run.open.pop(key, None)
                    run.last_stamp = round(stamp)
                with send_lock:
                    if run.stop.is_set():
                        return
                    self._send_profile(conn, raw)
        except OSError as exc:
            log.debug("fake dom0 push ended: %s", exc)

    def _finish(
        self, run: _Run, conn: socket.socket, send_lock: threading.Lock, external: bool
    ) -> None:
        run.stop.set()
        if run.thread is not None:
            run.thread.join(10)
        if external and run.open:
            raw = [(task, "EXIT_EXTERNAL", run.last_stamp) for task, _job in sorted(run.open)]
            run.open.clear()
            with send_lock:
                self._send_profile(conn, raw)

    def _send_profile(self, conn: socket.socket, raw: list[ProfileEvent]) -> None:
        payload = profile_xml(raw).encode("ascii") + (b"\0" if self.nul_terminate else b"")
        message = word(len(payload)) + payload
        self._note("pushed", *raw)  # before sending: a reader that got it sees it recorded
        if self.fragment:
            for i in range(0, len(message), self.fragment):
                conn.sendall(message[i : i + self.fragment])
        else:
            conn.sendall(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a fake dom0 on ``--host``/``--port`` until killed (guest images, demos)."""
    parser = argparse.ArgumentParser(prog="python -m farm.session.fake_dom0")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument("--time-scale", type=float, default=0.0)
    parser.add_argument("--silent-after", type=int, default=None)
    args = parser.parse_args(argv)
    server = FakeDom0Server(
        host=args.host,
        port=args.port,
        time_scale=args.time_scale,
        silent_after=args.silent_after,
    )
    print(f"fake-dom0 listening on {args.host}:{server.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
