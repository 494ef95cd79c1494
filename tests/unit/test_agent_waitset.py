"""The runner's selector (farm/agent/waitset.py): timers are kept to the sub-millisecond.

epoll counts whole milliseconds and Python rounds a timeout up, so a release due in
1.5 ms would wake the scheduler at 2 ms: the selector waits the whole milliseconds
and a nanosleep the rest; a wake-up before the timeout returns at once."""

from __future__ import annotations

import os
from typing import Any

import pytest

from farm.agent import waitset

pytestmark = pytest.mark.unit


class _Clock:
    now = 100.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def __init__(self) -> None:
        self.slept: list[float] = []


def _patched(monkeypatch: pytest.MonkeyPatch) -> tuple[waitset.WaitSet, _Clock, list[Any]]:
    clock = _Clock()
    monkeypatch.setattr(waitset, "time", clock)
    waits = waitset.WaitSet()
    asked: list[Any] = []
    real = waits._sel.select

    def select(timeout: float | None = None) -> Any:
        asked.append(timeout)
        keys = real(0)
        if not keys:  # it waited its whole timeout
            clock.now += timeout or 0.0
        return keys

    monkeypatch.setattr(waits._sel, "select", select)
    return waits, clock, asked


def test_a_timeout_is_waited_to_the_sub_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    waits, clock, asked = _patched(monkeypatch)
    try:
        assert waits.wait(0.0015) == []
        assert asked == [0.001]
        assert clock.slept == [pytest.approx(0.0005)]
        asked.clear()
        clock.slept.clear()
        assert waits.wait(0.0004) == []
        assert asked == [0.0] and clock.slept == [pytest.approx(0.0004)]
    finally:
        waits.close()


def test_a_wake_up_returns_without_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    waits, clock, asked = _patched(monkeypatch)
    try:
        waits.wake()
        assert waits.wait(5.0004) == []
        assert asked == [5.0] and clock.slept == []
    finally:
        waits.close()


def test_a_wait_set_left_empty_serves_the_next_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """No epoll instance and wake pipe are made and closed per set; a pending wake-up
    of the last set is drained first."""
    monkeypatch.setattr(waitset, "_spare", [])
    first = waitset.take()
    first.wake()
    first.close()
    second = waitset.take()
    assert second is first
    assert second._sel.select(0) == []  # (the old wake-up is gone)
    second.close()
    assert waitset.take() is second
    watched = waitset.take()  # a new one (no spare left): closed for real when not empty
    monkeypatch.setattr(watched._sel, "get_map", lambda: {1: None, 2: None})
    watched.close()
    assert waitset.take() is not watched
    for fd in (second._wake_r, second._wake_w):
        os.close(fd)
