"""What a runner's scheduler thread sleeps on: its wake pipe and its jobs' pipes and pidfds.

One selector holds the wake pipe (written from any thread: a launcher has a
result, a stop was requested), each running job's output pipe and its pidfd,
readable once the process has exited (:meth:`farm.agent.jobs.Job.reap`). So
the scheduler thread alone notices every exit: no waiter thread per job, no
thread switch between a job's end and its event. A runner's wait set, left
with nothing but its wake pipe, serves the next runner (:func:`take`): no
epoll instance and pipe made and closed per set. A late wake-up from the last
set's launchers only makes the next one look around once more.
"""

from __future__ import annotations

import math
import os
import selectors
import time

from farm.agent.jobs import Job

OUTPUT, EXITED = 0, 1
_spare: list[WaitSet] = []  # at most one, closed by its last runner (list ops: atomic)


def take() -> WaitSet:
    """A wait set for a new runner: the last runner's, else a new one."""
    try:
        return _spare.pop()
    except IndexError:
        return WaitSet()


class WaitSet:
    """The scheduler thread's selector (the wake pipe too); :meth:`wake` from any thread."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)

    def wake(self) -> None:
        """Make the next (or current) :meth:`wait` return (any thread)."""
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already pending (or shutting down)

    def watch(self, job: Job) -> None:
        """Watch ``job``'s output and, where it has one, its pidfd."""
        self._sel.register(job.out_fd, selectors.EVENT_READ, (OUTPUT, job))
        if job.pidfd >= 0:
            self._sel.register(job.pidfd, selectors.EVENT_READ, (EXITED, job))

    def unwatch_exit(self, job: Job) -> None:
        """Before ``job`` is reaped (its pidfd is closed then)."""
        self._forget(job.pidfd)

    def unwatch_output(self, job: Job) -> None:
        self._forget(job.out_fd)

    def _forget(self, fd: int) -> None:
        if fd >= 0:
            try:
                self._sel.unregister(fd)
            except (KeyError, ValueError):
                pass

    def wait(self, timeout: float | None) -> list[tuple[int, Job]]:
        """What became ready within ``timeout`` s: (OUTPUT or EXITED, job); wakes drained.

        epoll counts whole milliseconds and Python rounds a timeout up to the next
        one: a release would be up to 1 ms late (0.5 ms on average). So the selector
        waits the whole milliseconds, a nanosleep the rest (< 1 ms, fds unwatched).
        """
        if timeout is None or timeout <= 0:
            return self._select(timeout)
        deadline = time.monotonic() + timeout
        keys = self._sel.select(math.floor(timeout * 1000.0) / 1000.0)
        if not keys:  # timed out: the rest of the timeout
            rest = deadline - time.monotonic()
            if rest > 0:
                time.sleep(rest)
        return self._ready(keys)

    def _select(self, timeout: float | None) -> list[tuple[int, Job]]:
        return self._ready(self._sel.select(timeout))

    def _ready(self, keys: list[tuple[selectors.SelectorKey, int]]) -> list[tuple[int, Job]]:
        ready = []
        for key, _ in keys:
            if key.data is None:
                self._drain()
            else:
                ready.append(key.data)
        return ready

    def _drain(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Keep it for the next runner if nothing but the wake pipe is watched, else close."""
        if len(self._sel.get_map()) == 1 and not _spare:
            self._drain()
            _spare.append(self)
            return
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
