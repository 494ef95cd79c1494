"""A pool of the agent's helper threads: task launchers and job waiters, reused.

Every set used to start a launcher thread per task and every job a waiter
thread. Creating a thread costs time on the dispatch path, and a new thread
starts SCHED_OTHER (the raised threads are reset-on-fork): before it can raise
itself it needs the GIL, and a real-time job preempting it right then would
hold up every other agent thread (the scheduler's releases included) for as
long as that job runs. Pool threads are created once and idle in a queue; one
raised (:func:`farm.agent.sched.raise_thread`) for work of a real-time set
stays raised while it idles, and goes back to SCHED_OTHER for best-effort work.
"""

from __future__ import annotations

import _thread
import os
import queue
import threading
from collections.abc import Callable

from farm.agent import logs, sched

log = logs.get_logger(__name__)

_work: queue.SimpleQueue[tuple[Callable[[], None], bool]] = queue.SimpleQueue()
_lock = threading.Lock()
_idle = 0  # threads waiting in _work (or about to)
_threads = 0


def run(fn: Callable[[], None], rt: bool = False) -> None:
    """Run ``fn`` in a pool thread (raised above all jobs first when ``rt``); never waits.

    A low-level thread is started only when none is idle: ``Thread.start`` would
    wait until it runs.
    """
    global _idle, _threads
    with _lock:
        spare = _idle > 0
        if spare:
            _idle -= 1
        else:
            _threads += 1
    _work.put((fn, rt))
    if not spare:
        _thread.start_new_thread(_loop, ())


def counts() -> tuple[int, int]:
    """(threads in the pool, idle ones), for tests and status."""
    with _lock:
        return _threads, _idle


def _lower() -> bool:
    """Back to SCHED_OTHER; True if done."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        return False
    return True


def _loop() -> None:
    global _idle
    raised = False
    while True:
        fn, rt = _work.get()
        if rt and not raised:
            raised = sched.raise_thread() is None
        elif raised and not rt:  # best-effort work runs best effort
            raised = not _lower()
        try:
            fn()
        except BaseException:  # a worker never dies of its work
            log.exception("agent worker thread: %r failed", fn)
        with _lock:
            _idle += 1
