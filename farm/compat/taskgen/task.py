"""taskgen's Task (``taskgen.task``): a dict merged from blocks; ``jobs`` filled at run time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from farm.compat.convert import stamp
from farm.compat.variants import dict_variants
from farm.events import Event, EventType


class Job:
    """One job of a task: start and end (integer ms of the guest clock)."""

    def __init__(self) -> None:
        self.start_date: int | None = None
        self.end_date: int | None = None
        self.exit_value: str | None = None

    def is_running(self) -> bool:
        return self.end_date is None

    def __repr__(self) -> str:
        return f"Job({self.start_date}, {self.end_date}, {self.exit_value})"


class BlockTask(dict[str, Any]):
    """A task dict of either fork: its defaults, then each block merged in order.

    A callable block is called first. The forks differ in ``_defaults`` and in
    how they keep job records; the malsami fork's Task is one of these too.
    """

    def __init__(self, *blocks: Any) -> None:
        super().__init__(self._defaults())
        for block in blocks:
            if callable(block):
                block = block()
            super().update(block)

    @staticmethod
    def _defaults() -> dict[str, Any]:
        return {}

    @property
    def id(self) -> Any:
        return self["id"]

    @id.setter
    def id(self, value: Any) -> None:
        self["id"] = value

    def binary(self) -> Any:
        return self["pkg"]


class Task(BlockTask):
    """A task: taskgen's defaults, then each block merged in order (a callable block is called).

    ``jobs`` is a list of :class:`Job` the distributor fills from the events.
    """

    def __init__(self, *blocks: Any) -> None:
        super().__init__(*blocks)
        self.jobs: list[Job] = []

    @staticmethod
    def _defaults() -> dict[str, Any]:
        return {
            "id": None,
            "priority": None,
            "quota": None,
            "pkg": None,
            "config": None,
            "period": None,
            "numberofjobs": 1,
        }

    def variants(self) -> Iterator[Task]:
        """Every variant of this task (non-string iterables are dimensions)."""
        for values in dict_variants(self):
            yield Task(values)

    def reset_jobs(self) -> None:
        self.jobs = []

    def record_event(self, event: Event) -> None:
        """Keep a START/exit event in ``jobs`` as taskgen's Genode session did."""
        if event.type is EventType.START:
            if not self.jobs or self.jobs[-1].start_date is not None:
                self.jobs.append(Job())
            self.jobs[-1].start_date = stamp(event)
        elif event.is_exit:
            if not self.jobs or self.jobs[-1].end_date is not None:
                self.jobs.append(Job())
            self.jobs[-1].end_date = stamp(event)
            self.jobs[-1].exit_value = str(event.type)
