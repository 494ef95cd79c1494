"""The monitor contract (taskgen / MaLSAMi): five hooks, all optional to implement.

The Machine calls, for each task-set variant it runs::

    __taskset_start__(taskset)            the variant was sent to a target
    __taskset_event__(taskset, event)     one farm.events.Event of it
    __taskset_finish__(taskset)           every task sent JOBS_DONE
    __taskset_stop__(taskset)             the machine could not finish it; re-queued
    __taskset_bad__(taskset, tries)       given up after ``tries`` attempts

Wrap a monitor in farm.monitors.MonitorThread to have its calls serialised on
a thread of its own, with exceptions logged instead of raised.

A variant identifies itself by attributes the Distributor sets: ``job_id`` (or
``name``) and ``index`` (0-based ordinal within its job); the helpers below
read them defensively, so monitors also accept plain task sets.

A farm that died after telling a monitor that a set finished but before its
journal settled it runs the set again when resumed, with ``replaces_finish``
set on the variant: this run's finish replaces an earlier one that may already
be recorded. A store keyed by (job, index) replaces that record
(SqliteMonitor); an append-only one marks the new finish (CSV, log).
"""

from __future__ import annotations

from typing import Any

from farm.events import Event


def taskset_job(taskset: Any) -> str:
    """Name of the job a variant belongs to (``job_id``, ``job_name``, ``name``, class name)."""
    for attr in ("job_id", "job_name", "name"):
        value = getattr(taskset, attr, None)
        if value is not None and not callable(value):
            return str(value)
    return type(taskset).__name__


def taskset_variant(taskset: Any) -> int | None:
    """0-based index of the variant within its job, None if the task set has none."""
    value = getattr(taskset, "index", None)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def taskset_replaces_finish(taskset: Any) -> bool:
    """True if an earlier finish of this variant may already be recorded (a resumed re-run)."""
    return getattr(taskset, "replaces_finish", False) is True


def taskset_label(taskset: Any) -> str:
    """``job#index`` (or just the job) for log lines."""
    variant = taskset_variant(taskset)
    job = taskset_job(taskset)
    return job if variant is None else f"{job}#{variant}"


def taskset_tasks(taskset: Any) -> list[dict[str, Any]]:
    """The task dicts of a task set's description ([] if it cannot describe itself)."""
    try:
        description = taskset.description()
    except Exception:
        return []
    tasks = description.get("tasks") if isinstance(description, dict) else None
    return [t for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else []


class AbstractMonitor:
    """Receives a task set's life cycle and events; every hook defaults to doing nothing."""

    def __taskset_start__(self, taskset: Any) -> None:
        """A variant was started on a target."""

    def __taskset_event__(self, taskset: Any, event: Event) -> None:
        """One event of a running variant."""

    def __taskset_finish__(self, taskset: Any) -> None:
        """The variant finished: every task sent JOBS_DONE."""

    def __taskset_stop__(self, taskset: Any) -> None:
        """The machine could not finish the variant; it is re-queued."""

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        """The variant was given up after ``tries`` attempts."""

    def close(self) -> None:
        """Release files/connections (not a hook; called when the monitor is done)."""
