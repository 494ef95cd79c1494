"""The client loop: pick a destination, send a message, wait for its answer, think."""

from __future__ import annotations

import math
import socket
import threading
import time

from farm.agent.traffic.config import draws
from farm.agent.traffic.stats import ClientStats, emit, start_reporter
from farm.agent.traffic.wire import Buffer, exchange

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

MAX_OPEN = 64  # connections kept open (one per destination)


def run_client(cfg: dict[str, Any], stop: threading.Event, out: TextIO) -> dict[str, Any]:
    """Send messages until duration, count or ``stop``; print stats; return the final ones."""
    started = time.monotonic()
    deadline = started + cfg["duration"] if cfg["duration"] > 0 else math.inf
    stats = ClientStats(cfg["seed"], started)
    described = {"size": str(cfg["size"]), "think": str(cfg["think"]), "seed": cfg["seed"]}
    done = threading.Event()
    snap = lambda: stats.snapshot(False, described)  # noqa: E731
    reporter = start_reporter(cfg["stats_interval"], done, snap, out)
    conns: dict[tuple[str, int], socket.socket] = {}
    buf = Buffer()
    try:
        for seq, (dest, size, think) in enumerate(draws(cfg)):
            if stop.is_set() or time.monotonic() >= deadline:
                break
            if cfg["count"] and seq >= cfg["count"]:
                break
            name = f"{dest[0]}:{dest[1]}"
            try:
                sock = conns.get(dest)
                if sock is None:
                    if len(conns) >= MAX_OPEN:
                        conns.pop(next(iter(conns))).close()
                    sock = socket.create_connection(dest, timeout=cfg["connect_timeout"])
                    sock.settimeout(cfg["timeout"])
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[dest] = sock
                t0 = time.monotonic()
                received = exchange(sock, seq, size, buf)
                stats.record(name, size, received, time.monotonic() - t0)
            except OSError as exc:
                stats.error(exc)
                broken = conns.pop(dest, None)
                if broken is not None:
                    broken.close()
            if think > 0:
                stop.wait(max(0.0, min(think, deadline - time.monotonic())))
    finally:
        done.set()
        if reporter is not None:
            reporter.join()
        for sock in conns.values():
            sock.close()
    final = stats.snapshot(True, described)
    emit(out, final)
    return final
