"""MonitorThread: runs every hook call of one monitor on a thread of its own, in order.

So calls to one monitor are serialised (it needs no locks), a slow monitor
never blocks a machine, and a monitor that raises is logged with its
traceback and never propagates into the caller.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from farm.core.records import RunRecord
from farm.events import Event
from farm.monitors.base import AbstractMonitor, current_run, running

log = logging.getLogger(__name__)

_STOP = object()
_THEN = "__then__"
_EVENTS = "__events__"  # one queued item for a batch of events of one run
_HELD = "__held__"  # one queued item for the calls a thread held back (hold/release)


class MonitorThread(AbstractMonitor):
    """Wraps a monitor: hooks are queued and run on one worker thread, in call order."""

    def __init__(self, monitor: Any, name: str | None = None, close_monitor: bool = True) -> None:
        """Start the worker; ``close_monitor``: close() also closes the wrapped monitor."""
        self.monitor = monitor
        self.close_monitor = close_monitor
        self.errors = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._submitted = 0
        self._done = 0
        self._closed = False
        self._held = threading.local()  # calls held back by the thread that called hold()
        self._thread = threading.Thread(
            target=self._work, name=name or f"monitor-{type(monitor).__name__}", daemon=True
        )
        self._thread.start()

    # -- queueing --------------------------------------------------------------------

    def _submit(self, hook: str, *args: Any, run: RunRecord | None = None) -> None:
        held: list[tuple[str, tuple[Any, ...], RunRecord | None]] | None = getattr(
            self._held, "calls", None
        )
        if held is not None:
            held.append((hook, args, run))
            return
        with self._cond:
            if self._closed:
                log.warning("%s closed: dropping %s call", self, hook)
                return
            self._submitted += 1
            self._queue.put((hook, args, run))

    # the MonitorPort of farm.core: hooks with the run record, which the wrapped
    # monitor reads through farm.monitors.base.current_run() while its hook runs

    def started(self, run: RunRecord) -> None:
        self._submit("__taskset_start__", run.variant, run=run)

    def event(self, run: RunRecord, event: Event) -> None:
        self._submit("__taskset_event__", run.variant, event, run=run)

    def events(self, run: RunRecord, events: Sequence[Event]) -> None:
        """Every event of one batch, in order, as one queued item: one wake-up of the
        worker per batch the slot received, not one per event (the dispatch path)."""
        if events:
            self._submit(_EVENTS, run.variant, tuple(events), run=run)

    def finished(self, run: RunRecord) -> None:
        self._submit("__taskset_finish__", run.variant, run=run)

    def stopped(self, run: RunRecord) -> None:
        self._submit("__taskset_stop__", run.variant, run=run)

    def bad(self, run: RunRecord, tries: int) -> None:
        self._submit("__taskset_bad__", run.variant, tries, run=run)

    # the monitor hooks themselves (a MonitorThread is a monitor too: nested in another
    # wrapper it keeps the run record of the hook that called it)

    def __taskset_start__(self, taskset: Any) -> None:
        self._submit("__taskset_start__", taskset, run=current_run(taskset))

    def __taskset_event__(self, taskset: Any, event: Event) -> None:
        self._submit("__taskset_event__", taskset, event, run=current_run(taskset))

    def __taskset_finish__(self, taskset: Any) -> None:
        self._submit("__taskset_finish__", taskset, run=current_run(taskset))

    def __taskset_stop__(self, taskset: Any) -> None:
        self._submit("__taskset_stop__", taskset, run=current_run(taskset))

    def __taskset_bad__(self, taskset: Any, tries: int) -> None:
        self._submit("__taskset_bad__", taskset, tries, run=current_run(taskset))

    def then(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the worker once every hook queued so far has run.

        Lets the caller go on at once instead of waiting in flush(); the
        callback is never dropped: once closed, it runs here in the caller.
        """
        held = getattr(self._held, "calls", None)
        if held is not None:
            held.append((_THEN, (callback,), None))
            return
        with self._cond:
            if not self._closed:
                self._submitted += 1
                self._queue.put((_THEN, (callback,), None))
                return
        callback()

    def hold(self) -> None:
        """Hold back this thread's calls (in order) until :meth:`release`; idempotent.

        A slot holds what it tells the monitor between a set's last events and the
        next set's start request, so the worker wakes once, after the request,
        instead of competing with the slot for the interpreter on the dispatch path.
        Other threads' calls are queued as usual (calls of one run come from one thread).
        """
        if getattr(self._held, "calls", None) is None:
            self._held.calls = []

    def release(self) -> None:
        """Queue the calls this thread held, in order, as one item; no-op if none."""
        held = getattr(self._held, "calls", None)
        self._held.calls = None
        if not held:
            return
        with self._cond:
            if not self._closed:
                self._submitted += 1
                self._queue.put((_HELD, tuple(held), None))
                return
        for hook, args, _run in held:  # closed meanwhile: as then() and _submit() do
            if hook == _THEN:
                self._run_callback(args[0])
            else:
                log.warning("%s closed: dropping %s call", self, hook)

    # -- worker ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            hook, args, run = item
            if hook == _HELD:
                for held in args:
                    self._run(*held)
            else:
                self._run(hook, args, run)
            with self._cond:
                self._done += 1
                self._cond.notify_all()
        if self.close_monitor:
            self._call("close")
        with self._cond:
            self._cond.notify_all()

    def _run(self, hook: str, args: tuple[Any, ...], run: RunRecord | None) -> None:
        """Run one queued call: a callback, a batch of events or a hook."""
        if hook == _THEN:
            self._run_callback(args[0])
        elif hook == _EVENTS:
            variant, events = args
            with running(run):
                for event in events:
                    self._call("__taskset_event__", variant, event)
        else:
            with running(run):
                self._call(hook, *args)

    def _call(self, hook: str, *args: Any) -> None:
        method = getattr(self.monitor, hook, None)
        if method is None:
            return
        try:
            method(*args)
        except Exception:
            self.errors += 1
            log.exception("monitor %r failed in %s", self.monitor, hook)

    def _run_callback(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("%s: callback %r failed", self, callback)

    # -- control ---------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every call queued so far has run; False on timeout."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(
                lambda: self._done >= target or not self._thread.is_alive(), timeout
            )

    def close(self, timeout: float | None = None) -> None:
        """Run what is queued, close the monitor (if asked) and stop the thread; idempotent.

        With a ``timeout``, a worker still busy after it is logged and left behind
        (it is a daemon thread); check ``alive``.
        """
        with self._cond:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("%s still busy %ss after close()", self, timeout)

    @property
    def alive(self) -> bool:
        """True while the worker thread runs."""
        return self._thread.is_alive()

    def __repr__(self) -> str:
        return f"MonitorThread({self.monitor!r})"


class NullMonitor:
    """The MonitorPort of a submission without a monitor: every hook does nothing."""

    def started(self, run: RunRecord) -> None:
        """Nothing to tell."""

    def event(self, run: RunRecord, event: Event) -> None:
        """Nothing to tell."""

    def events(self, run: RunRecord, events: Sequence[Event]) -> None:
        """Nothing to tell."""

    def finished(self, run: RunRecord) -> None:
        """Nothing to tell."""

    def stopped(self, run: RunRecord) -> None:
        """Nothing to tell."""

    def bad(self, run: RunRecord, tries: int) -> None:
        """Nothing to tell."""

    def then(self, callback: Callable[[], None]) -> None:
        """No hooks to wait for: run ``callback`` now."""
        callback()

    def hold(self) -> None:
        """Nothing is queued: nothing to hold."""

    def release(self) -> None:
        """Nothing held."""

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        """Nothing to release."""
