"""The MaLSAMi distributor's monitor base (``distributor.monitor``)."""

from __future__ import annotations

from typing import Any


class AbstractMonitor:
    """Base of user monitors; every hook optional. ``__taskset_event__`` may take one argument
    (the set, ``task['jobs']`` updated) as the MaLSAMi distributor called it, or two."""

    def __taskset_event__(self, taskset: Any, event: Any = None) -> None:
        """A job of the set started or ended."""

    def __taskset_start__(self, taskset: Any) -> None:
        """The set was sent to a target."""

    def __taskset_finish__(self, taskset: Any) -> None:
        """Every task of the set is done."""

    def __taskset_stop__(self, taskset: Any) -> None:
        """The set was stopped; it is re-queued."""

    def __taskset_bad__(self, taskset: Any, n: int) -> None:
        """The set was given up after ``n`` tries."""
