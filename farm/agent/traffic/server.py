"""The server: accepts clients (a thread each) and answers every message (echo or sink)."""

from __future__ import annotations

import socket
import sys
import threading
import time

from farm.agent.traffic.stats import emit, start_reporter
from farm.agent.traffic.wire import FLAG_ACK, HEADER, MAX_SIZE, Buffer, recv_exact

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

MAX_CONNECTIONS = 1024


class _Server:
    """Accepts clients (a thread each) and answers every message: echo or ACK (sink)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.counts = dict(connections=0, messages=0, bytes_received=0, bytes_sent=0, errors=0)
        self.conns: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        self.started = time.monotonic()
        family = socket.AF_INET6 if ":" in cfg["host"] else socket.AF_INET
        self.listener = socket.create_server((cfg["host"], cfg["port"]), family=family, backlog=128)
        self.port = self.listener.getsockname()[1]
        self.closing = False

    def snapshot(self, final: bool) -> dict[str, Any]:
        with self.lock:
            return {
                "traffic": "server",
                "final": final,
                "elapsed_s": round(time.monotonic() - self.started, 4),
                "mode": self.cfg["mode"],
                "port": self.port,
                "active": len(self.conns),
                **self.counts,
            }

    def accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # listener shut down
            with self.lock:
                if self.closing or len(self.conns) >= MAX_CONNECTIONS:
                    sock.close()
                    self.counts["errors"] += 1
                    continue
                self.conns.add(sock)
                self.counts["connections"] += 1
                thread = threading.Thread(target=self.serve, args=(sock,), daemon=True)
                self.threads = [t for t in self.threads if t.is_alive()]
                self.threads.append(thread)
            thread.start()

    def serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head, buf, echo = bytearray(HEADER.size), Buffer(), self.cfg["mode"] == "echo"
        try:
            while recv_exact(sock, memoryview(head)):
                length, _, seq = HEADER.unpack(head)
                if length > MAX_SIZE:
                    raise ConnectionError(f"message of {length} bytes exceeds {MAX_SIZE}")
                payload = buf.view(length)
                if length and not recv_exact(sock, payload):
                    raise ConnectionError("client closed the connection mid-message")
                if echo:
                    sock.sendmsg([head, payload])
                else:
                    sock.sendall(HEADER.pack(0, FLAG_ACK, seq))
                with self.lock:
                    self.counts["messages"] += 1
                    self.counts["bytes_received"] += length
                    self.counts["bytes_sent"] += length if echo else 0
        except OSError:
            with self.lock:
                self.counts["errors"] += 0 if self.closing else 1
        finally:
            with self.lock:
                self.conns.discard(sock)
            sock.close()

    def close(self) -> None:
        with self.lock:
            self.closing = True
            conns = list(self.conns)
        for s in [self.listener, *conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.listener.close()

    def join(self, timeout: float) -> None:
        """Wait (bounded) for the connection threads, so the final counts are complete."""
        deadline = time.monotonic() + timeout
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def run_server(cfg: dict[str, Any], stop: threading.Event, out: TextIO) -> dict[str, Any]:
    """Serve until duration or ``stop``; print stats; return the final ones."""
    server = _Server(cfg)
    print(f"traffic server ({cfg['mode']}) listening on {cfg['host']}:{server.port}", flush=True,
          file=sys.stderr)  # fmt: skip
    accepter = threading.Thread(target=server.accept_loop, name="traffic-accept", daemon=True)
    accepter.start()
    done = threading.Event()
    reporter = start_reporter(cfg["stats_interval"], done, lambda: server.snapshot(False), out)
    stop.wait(cfg["duration"] or None)
    server.close()
    accepter.join(5.0)
    server.join(5.0)
    done.set()
    if reporter is not None:
        reporter.join()
    final = server.snapshot(True)
    emit(out, final)
    return final
