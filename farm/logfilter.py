"""Rate limiting of repeated log lines, so no failure loop can fill the disk.

:class:`RepeatFilter` sits on a handler (farm's log file, the CLI's stderr):
the same message from the same logger at the same level more than ``burst``
times within ``window`` seconds is dropped; the next line of that kind after
the window is preceded by one "suppressed K similar lines" summary. A filter
on a handler (not on the ``farm`` logger) sees the records of every child
logger, which logger-level filters do not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: distinct keys remembered at most (old ones are forgotten first)
MAX_KEYS = 4096


class _Count:
    __slots__ = ("dropped", "seen", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.seen = 0
        self.dropped = 0


class RepeatFilter(logging.Filter):
    """Drop a repeated line beyond ``burst`` per ``window`` seconds; summarise the drops."""

    def __init__(
        self,
        burst: int = 20,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int, str], _Count] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it
            return True
        key = (record.name, record.levelno, message[:500])
        now = self._clock()
        with self._lock:
            count = self._counts.get(key)
            if count is None or now - count.start >= self.window:
                dropped = count.dropped if count is not None else 0
                if count is not None:
                    del self._counts[key]
                elif len(self._counts) >= MAX_KEYS:
                    del self._counts[next(iter(self._counts))]
                count = self._counts[key] = _Count(now)
                if dropped:
                    record.msg = f"(suppressed {dropped} similar lines) {message}"
                    record.args = None
            count.seen += 1
            if count.seen > self.burst:
                count.dropped += 1
                return False
        return True


def rate_limit(handler: logging.Handler, burst: int = 20, window: float = 10.0) -> None:
    """Give ``handler`` one RepeatFilter (idempotent)."""
    if not any(isinstance(f, RepeatFilter) for f in handler.filters):
        handler.addFilter(RepeatFilter(burst, window))
