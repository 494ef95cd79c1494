"""A traffic job's SIGTERM/SIGINT handler never blocks: it cannot deadlock the job.

Python runs a signal handler in the main thread between two bytecodes, possibly
while that thread holds the stop event's own lock (inside ``stop.wait()``). A
handler calling ``stop.set()`` then waits for that lock forever and the job ignores
every later SIGTERM until the agent's grace runs out and it is SIGKILLed.
"""

from __future__ import annotations

import signal
import threading

import pytest

from farm.agent.traffic.__main__ import stop_on_signals

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_handler_returns_while_the_event_lock_is_held(signo: int) -> None:
    stop = threading.Event()
    restore = stop_on_signals(stop)
    try:
        handler = signal.getsignal(signo)
        assert callable(handler)
        returned = threading.Event()

        def deliver() -> None:  # the handler, run while the lock is held (as in wait())
            handler(signo, None)
            returned.set()

        with stop._cond:  # type: ignore[attr-defined]  # what Event.wait() holds at times
            runner = threading.Thread(target=deliver, daemon=True)
            runner.start()
            assert returned.wait(10), "the handler blocked on the stop event's lock"
        assert stop.wait(10), "the signal did not set the stop event"
    finally:
        restore()
    assert signal.getsignal(signo) is not handler


def test_restore_puts_back_the_previous_handlers() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    restore = stop_on_signals(threading.Event())
    restore()
    assert {s: signal.getsignal(s) for s in before} == before
