"""FanoutMonitor: hands every hook call to several monitors, in order."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from farm.events import Event
from farm.monitors.base import AbstractMonitor

log = logging.getLogger(__name__)


class FanoutMonitor(AbstractMonitor):
    """Calls each of several monitors in turn; one that raises is logged, the rest still run."""

    def __init__(self, monitors: Iterable[Any]) -> None:
        self.monitors = list(monitors)
        self.errors = 0

    def _each(self, hook: str, *args: Any) -> None:
        for monitor in self.monitors:
            method = getattr(monitor, hook, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                self.errors += 1
                log.exception("monitor %r failed in %s", monitor, hook)

    def __taskset_start__(self, taskset: Any) -> None:
        self._each("__taskset_start__", taskset)

    def __taskset_event__(self, taskset: Any, event: Event) -> None:
        self._each("__taskset_event__", taskset, event)

    def __taskset_finish__(self, taskset: Any) -> None:
        self._each("__taskset_finish__", taskset)

    def __taskset_stop__(self, taskset: Any) -> None:
        self._each("__taskset_stop__", taskset)

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        self._each("__taskset_bad__", taskset, tries)

    def close(self) -> None:
        """Close every monitor that can be closed."""
        self._each("close")

    def __repr__(self) -> str:
        return f"FanoutMonitor({self.monitors!r})"
