"""Typed records of the core path: the state of a set, and one variant on its way to a guest.

A leaf module (no farm imports) so monitors, reports and the journal can share
these types without depending on the Distributor.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class SetState(enum.StrEnum):
    """State of one set (variant), as stored by the journal, the SQLite monitor and reports."""

    STARTED = "started"  # sent to a guest (SQLite monitor)
    FINISHING = "finishing"  # finished, its monitor not yet settled (journal)
    FINISHED = "finished"
    STOPPED = "stopped"  # interrupted; re-queued unless given up
    BAD = "bad"  # given up


class Variant(Protocol):
    """What the core needs of a task-set variant (farm.taskset.TaskSet provides it)."""

    @property
    def index(self) -> int | None:
        """0-based ordinal of the variant within its task set (None: a template)."""
        ...

    def description(self) -> dict[str, Any]:
        """``{"tasks": [...]}``: what is sent to the target."""
        ...

    def binaries(self) -> Mapping[str, Path]:
        """Binaries to upload: name -> file."""
        ...


class TaskSource(Protocol):
    """What ``add_job`` needs of a task set: its variants, generated lazily."""

    def variants(self) -> Iterable[Variant]:
        """Every concrete variant (``index`` 0, 1, ...), in order."""
        ...


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One variant of one submission, as the core hands it to a slot and to monitors.

    ``variant`` is the user's task-set object and is never written to: what
    identifies the run (submission key, index, whether it replaces an earlier
    unsettled finish) travels here instead.
    """

    key: str  # submission key (stable across farm processes; the journal's job key)
    index: int  # 0-based ordinal of the variant within its submission
    variant: Variant  # the user's task-set object (monitors receive it)
    replaces_finish: bool = False  # an earlier finish may already be recorded (resumed re-run)

    @property
    def label(self) -> str:
        """``key#index`` for log lines."""
        return f"{self.key}#{self.index}"
