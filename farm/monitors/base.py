"""The monitor contract (taskgen / MaLSAMi): five hooks, all optional to implement.

A slot (farm.core.slot) calls, through a MonitorThread, for each task-set variant it runs::

    __taskset_start__(taskset)            the variant was sent to a target
    __taskset_event__(taskset, event)     one farm.events.Event of it
    __taskset_finish__(taskset)           every task sent JOBS_DONE
    __taskset_stop__(taskset)             the machine could not finish it; re-queued
    __taskset_bad__(taskset, tries)       given up after ``tries`` attempts

Wrap a monitor in farm.monitors.MonitorThread to have its calls serialised on
a thread of its own, with exceptions logged instead of raised.

The Distributor never writes onto task-set objects: each variant travels in a
:class:`farm.core.records.RunRecord` (submission key, index, replaces_finish).
While a hook runs on a MonitorThread, :func:`current_run` returns that record,
and the helpers below read it first: ``taskset_job`` gives the submission key,
``taskset_replaces_finish`` its flag. Outside a farm run (a plain task set fed
by hand) they fall back to the object's own ``job_id``/``name``/``index``
attributes, read defensively.

A farm that died after telling a monitor that a set finished but before its
journal settled it runs the set again when resumed, with ``replaces_finish``
set in its run record: this run's finish replaces an earlier one that may already
be recorded. A store keyed by (job, index) replaces that record
(SqliteMonitor); an append-only one marks the new finish (CSV, log).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from farm.core.records import RunRecord
from farm.events import Event

_local = threading.local()


def current_run(taskset: object = None) -> RunRecord | None:
    """The run record of the hook running on this thread (of ``taskset``, if given)."""
    run: RunRecord | None = getattr(_local, "run", None)
    if run is None or (taskset is not None and run.variant is not taskset):
        return None
    return run


@contextmanager
def running(run: RunRecord | None) -> Iterator[None]:
    """Make ``run`` the :func:`current_run` of this thread while the block runs."""
    before = getattr(_local, "run", None)
    _local.run = run
    try:
        yield
    finally:
        _local.run = before


def taskset_job(taskset: Any) -> str:
    """Submission a variant belongs to (its run's key, else ``job_id``, ``job_name``, ``name``)."""
    run = current_run(taskset)
    if run is not None:
        return run.key
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
    run = current_run(taskset)
    if run is not None:
        return run.replaces_finish
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
