"""taskgen's monitor base (``taskgen.monitor``): four hooks, called on a thread of farm's."""

from __future__ import annotations

from typing import Any


class AbstractMonitor:
    """Base of user monitors; every hook is optional (the original declared them abstract)."""

    def __taskset_event__(self, taskset: Any, event: Any) -> None:
        """A job of the set started or ended (``task.jobs`` already updated)."""

    def __taskset_start__(self, taskset: Any) -> None:
        """The set was sent to a target."""

    def __taskset_finish__(self, taskset: Any) -> None:
        """Every task of the set is done."""

    def __taskset_stop__(self, taskset: Any) -> None:
        """The set was stopped (stop(), or its machine failed)."""
