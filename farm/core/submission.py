"""A submission: one ``add_job`` call, its task set's variants handed out lazily to slots.

FIFO with re-queue at the front. Not thread-safe by itself: the Distributor
calls it under its own lock. Every run a submission hands out comes back
exactly once through ``complete`` or ``fail``; a failed one goes to the front
of the queue until it has failed ``set_tries`` times, then it is given up
(``__taskset_bad__``). Each variant travels in a :class:`RunRecord`; the
user's task-set objects are never written to.

("Job" in farm means one release of a real-time task, hence "submission".)
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

from farm.core.journal import Journal
from farm.core.ports import MonitorPort
from farm.core.records import RunRecord, SetState, TaskSource, Variant
from farm.errors import FarmError

log = logging.getLogger(__name__)


class Submission:
    """Progress of one ``add_job`` call."""

    _ids = itertools.count(1)

    def __init__(
        self,
        taskset: TaskSource,
        monitor: MonitorPort,
        params: tuple[object, ...],
        *,
        key: str,
        set_tries: int,
        journal: Journal | None,
    ) -> None:
        self.number = next(self._ids)
        self.taskset = taskset
        self.monitor = monitor
        self.params = params
        self.key = key
        self.name = type(taskset).__name__
        self.set_tries = set_tries
        self.journal = journal
        self.journal_id: int | None = None
        settled: set[int] = set()
        unsettled_finish: set[int] = set()
        if journal is not None:
            self.journal_id, settled = journal.open_job(key, self.name, taskset)
            unsettled_finish = journal.finishing(self.journal_id)
        self.skipped = len(settled)
        self._settled = settled
        self._unsettled_finish = unsettled_finish
        if unsettled_finish:
            log.warning(
                "job %s: sets %s finished before the farm stopped but were not settled; "
                "they run again and their monitor replaces the result it may have recorded",
                key,
                _some(unsettled_finish),
            )
        self._variants: Iterator[Variant] = iter(taskset.variants())
        self._pending: collections.deque[RunRecord] = collections.deque()
        self._tries: dict[int, int] = {}
        self.in_flight: dict[int, RunRecord] = {}
        self.exhausted = False
        self.cancelled = False
        self.error: BaseException | None = None
        self.finished = 0
        self.stopped = 0
        self.bad = 0
        self.total: int | None = _count(taskset)

    # -- handing out ------------------------------------------------------
    def take(self) -> RunRecord | None:
        """Next run (re-queued ones first), or None when nothing is ready."""
        if self.cancelled:
            return None
        if self._pending:
            run = self._pending.popleft()
        else:
            fresh = self._next_fresh()
            if fresh is None:
                return None
            run = fresh
        self.in_flight[run.index] = run
        return run

    def _next_fresh(self) -> RunRecord | None:
        while not self.exhausted:
            try:
                variant = next(self._variants)
            except StopIteration:
                self.exhausted = True
                break
            except FarmError as exc:  # invalid generated variant: stop this job, say why
                log.error("job %s: %s; no further variants are taken", self.key, exc)
                self.error = exc
                self.exhausted = True
                break
            index = variant.index
            if index is None:
                log.error("job %s: variant %r has no index; no further variants", self.key, variant)
                self.error = FarmError(f"variant {variant!r} has no index")
                self.exhausted = True
                break
            if index in self._settled:
                self._settled.discard(index)  # never needed again: keep memory flat
                continue
            replaces = index in self._unsettled_finish
            self._unsettled_finish.discard(index)
            # replaces_finish: see farm.monitors.base.taskset_replaces_finish
            return RunRecord(self.key, index, variant, replaces_finish=replaces)
        return None

    def has_work(self) -> bool:
        """True if take() could return something now (cheap, may pull nothing)."""
        return not self.cancelled and (bool(self._pending) or not self.exhausted)

    @property
    def done(self) -> bool:
        """Every variant handed out came back and no more will be taken."""
        return (self.cancelled or (self.exhausted and not self._pending)) and not self.in_flight

    # -- results ------------------------------------------------------------
    def finishing(self, run: RunRecord) -> None:
        """The variant finished; journal that before its monitor is told (thread-safe).

        ``complete`` settles it after the monitor has seen all its events; a farm
        that dies in between re-runs it on resume with ``replaces_finish`` set.
        """
        if self.journal is not None and self.journal_id is not None:
            self.journal.mark_finishing(self.journal_id, run.index)

    def complete(self, run: RunRecord) -> None:
        """The run finished on a slot."""
        self.in_flight.pop(run.index, None)
        self.finished += 1
        self._settle(run, SetState.FINISHED)

    def fail(self, run: RunRecord, *, count_try: bool = True, give_up: bool = False) -> int:
        """The slot could not finish it: re-queue it, or give it up (``give_up``: at once).

        Returns 0 if re-queued, else the number of tries it was given up after.
        """
        self.in_flight.pop(run.index, None)
        self.stopped += 1
        tries = self._tries.get(run.index, 0) + (1 if count_try else 0)
        self._tries[run.index] = tries
        if give_up or tries >= self.set_tries:
            self.bad += 1
            self._tries.pop(run.index, None)
            self._settle(run, SetState.BAD, tries)
            return max(tries, 1)
        if not self.cancelled:
            self._pending.appendleft(run)
        return 0

    def tries(self, run: RunRecord) -> int:
        return self._tries.get(run.index, 0)

    def cancel(self) -> list[RunRecord]:
        """Drop everything not handed out yet (the journal keeps those unfinished)."""
        self.cancelled = True
        dropped = list(self._pending)
        self._pending.clear()
        return dropped

    def _settle(self, run: RunRecord, state: SetState, tries: int | None = None) -> None:
        if self.journal is not None and self.journal_id is not None:
            self.journal.settle(self.journal_id, run.index, state, tries or 1)
        if (
            self.done
            and self.journal is not None
            and self.journal_id is not None
            and not self.cancelled
        ):
            self.journal.finish_job(self.journal_id)

    def summary(self) -> dict[str, object]:
        return {
            "job": self.number,
            "key": self.key,
            "name": self.name,
            "total": self.total,
            "finished": self.finished + self.skipped,
            "resumed_from": self.skipped,
            "in_flight": len(self.in_flight),
            "stopped": self.stopped,
            "bad": self.bad,
            "done": self.done,
            "error": str(self.error) if self.error else None,
        }


def submission_key(taskset: object, name: str | None = None) -> str:
    """Stable identity of a submission across farm processes.

    The given name, else the task set's class and a digest of its template.
    """
    if name:
        return name
    cls = type(taskset)
    try:
        template = json.dumps(_template(taskset), sort_keys=True, default=repr)
    except (TypeError, ValueError):
        template = ""
    digest = hashlib.sha256(template.encode()).hexdigest()[:12]
    return f"{cls.__module__}.{cls.__qualname__}:{digest}"


def _template(taskset: Any) -> object:
    tasks = getattr(taskset, "tasks", None)
    if tasks is None:
        try:
            tasks = list(taskset)
        except TypeError:
            return None
    out = []
    for task in tasks:
        out.append({k: _stable(v) for k, v in dict(task).items()})
    return out


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in value.items()}
    if isinstance(value, range):
        return f"range({value.start},{value.stop},{value.step})"
    if isinstance(value, list | tuple):
        return [_stable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(map(repr, value))
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return f"<{type(value).__name__}>"  # generators, callables: identity by type only


def _some(indices: set[int], limit: int = 20) -> str:
    """``1, 5, 7`` (the first ``limit`` indices, then how many more) for a log line."""
    ordered = sorted(indices)
    text = ", ".join(map(str, ordered[:limit]))
    return text if len(ordered) <= limit else f"{text} and {len(ordered) - limit} more"


def _count(taskset: object) -> int | None:
    fn = getattr(taskset, "variant_count", None)
    if fn is None:
        return None
    try:
        n = fn()
    except Exception:
        return None
    return n if isinstance(n, int) else None
