"""Client statistics (counters, latency percentiles) and the JSON stats lines."""

from __future__ import annotations

import json
import math
import random
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO

MAX_SAMPLES = 100_000  # latency samples kept (a reservoir beyond that)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank ``q``-th percentile (0 < q <= 100) of sorted values."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class ClientStats:
    """Counters of one client; latency percentiles from a bounded reservoir (own RNG)."""

    def __init__(self, seed: int | None, started: float) -> None:
        self.lock = threading.Lock()
        self.started = started
        self.messages = self.bytes_sent = self.bytes_received = self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.per_dest: dict[str, int] = {}
        self.samples: list[float] = []
        self.lat_max = self.lat_sum = 0.0
        self._rng = random.Random(seed)

    def record(self, dest: str, size: int, received: int, latency: float) -> None:
        """One completed message."""
        with self.lock:
            self.messages += 1
            self.bytes_sent += size
            self.bytes_received += received
            self.per_dest[dest] = self.per_dest.get(dest, 0) + 1
            self.lat_max = max(self.lat_max, latency)
            self.lat_sum += latency
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(latency)
            else:
                slot = self._rng.randrange(self.messages)
                if slot < MAX_SAMPLES:
                    self.samples[slot] = latency

    def error(self, exc: BaseException) -> None:
        """One failed attempt (connect, send, reply or timeout)."""
        with self.lock:
            self.errors += 1
            kind = type(exc).__name__
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def snapshot(self, final: bool, extra: dict[str, Any]) -> dict[str, Any]:
        """The stats line's object (``traffic`` is its first key)."""
        with self.lock:
            ordered = sorted(self.samples)
            latency = None
            if ordered:
                latency = {f"p{q}": round(percentile(ordered, q) * 1000, 4) for q in (50, 90, 99)}
                latency["max"] = round(self.lat_max * 1000, 4)
                latency["mean"] = round(self.lat_sum / self.messages * 1000, 4)
            return {
                "traffic": "client",
                "final": final,
                "elapsed_s": round(time.monotonic() - self.started, 4),
                "messages": self.messages,
                "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
                "errors": self.errors,
                "error_kinds": dict(self.error_kinds),
                "latency_ms": latency,
                "destinations": len(self.per_dest),
                **({"per_destination": dict(self.per_dest)} if len(self.per_dest) <= 16 else {}),
                **extra,
            }


def emit(out: TextIO, stats: dict[str, Any]) -> None:
    out.write(json.dumps(stats, separators=(",", ":")) + "\n")
    out.flush()


def start_reporter(
    interval: float, stop: threading.Event, make: Callable[[], dict[str, Any]], out: TextIO
) -> threading.Thread | None:
    """Thread printing ``make()`` every ``interval`` s until ``stop`` (None if interval is 0)."""
    if interval <= 0:
        return None

    def loop() -> None:
        while not stop.wait(interval):
            emit(out, make())

    thread = threading.Thread(target=loop, name="traffic-stats", daemon=True)
    thread.start()
    return thread
