"""Job spawning off the runner's scheduler thread: one launcher thread per task.

The runner's scheduler thread only decides *when* a job is released; the
launcher thread of the job's task builds its Launch, spawns the process and
hands the result back (:class:`Spawned`). So a slow spawn (a big environment,
an exec that pages in a large binary, a fork under TCG) of one task never holds
back another task's release: each task has its own thread, and a task never
has two spawns in flight (its next release is scheduled once the previous job
has started).

In a set with real-time tasks the scheduler thread, the launcher threads and
the jobs' waiter threads run SCHED_FIFO at the kernel's top priority with
reset-on-fork (:func:`farm.agent.sched.raise_thread`): no running job delays a
release, a spawn or the notice of an exit, and nothing they start inherits that
policy. Each job gets its own policy in the child before its exec (glibc's
posix_spawn, :mod:`farm.agent.pspawn`, or a ``preexec_fn``). Python threads share
one lock, the GIL: an agent thread of lower priority holding it while preempted
by a real-time job could still delay them; spawns keep the GIL across
posix_spawn so that the new job cannot preempt such a holder right then.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from farm.agent import logs, sched
from farm.agent.jobs import Job
from farm.agent.taskspec import TaskSpec

log = logs.get_logger(__name__)


@dataclass(slots=True)
class TaskState:
    """One task's state in a runner (its scheduler thread alone touches it)."""

    spec: TaskSpec
    plan: sched.SchedPlan
    pos: int  # index in the runner's task list (heap entries refer to it)
    running: Job | None = None
    done: bool = False
    failures: int = 0
    noticed: set[str] = field(default_factory=set)

    def is_last(self, index: int) -> bool:
        n = self.spec.numberofjobs
        return n > 0 and index + 1 >= n

    def release_time(self, t0: float, index: int) -> float:
        """Planned release of job ``index`` (absolute, no drift)."""
        return t0 + (self.spec.offset + index * self.spec.period) / 1000.0


@dataclass(slots=True)
class Spawned:
    """Outcome of one spawn request: the started job, or why it could not start."""

    pos: int  # the task's index in the runner's list
    index: int
    release: float
    job: Job | None
    error: BaseException | None = None


MakeJob = Callable[[], Job]


def raise_scheduler(plans: list[sched.SchedPlan]) -> str | None:
    """Run the calling (scheduler) thread above every job when some task is real-time.

    SCHED_FIFO at the kernel's top priority with reset-on-fork (nothing it might
    start inherits it): a running real-time job then cannot hold back the release
    of another task. Returns why not (no real-time task: None, nothing to do).
    """
    if not real_time(plans):
        return None
    problem = sched.raise_thread()
    if problem:
        log.info("agent threads stay SCHED_OTHER: %s", problem)
    return problem


def real_time(plans: list[sched.SchedPlan]) -> bool:
    """True if some task of the set has a real-time policy."""
    return any(plan.policy != "other" for plan in plans)


class TaskLauncher:
    """A thread spawning one task's jobs in order, reporting each through ``done``."""

    def __init__(self, name: str, rt: bool, done: Callable[[Spawned], None]) -> None:
        self._rt = rt
        self._done = done
        self._requests: queue.SimpleQueue[tuple[int, int, float, MakeJob] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=f"spawn-{name}", daemon=True)

    def start(self) -> None:
        """Start the thread (raised above all jobs first when ``rt``)."""
        self._thread.start()

    def submit(self, pos: int, index: int, release: float, make: MakeJob) -> None:
        """Spawn the job ``make`` builds, from the launcher thread."""
        self._requests.put((pos, index, release, make))

    def close(self, timeout: float = 5.0) -> None:
        """Let the thread end after the requests already submitted."""
        self._requests.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        raised = self._rt and sched.raise_thread() is None
        while True:
            request = self._requests.get()
            if request is None:
                return
            pos, index, release, make = request
            try:
                job = make()
                job.rt_waiter = raised
                job.spawn()
                result = Spawned(pos, index, release, job)
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                result = Spawned(pos, index, release, None, exc)
            except Exception as exc:  # never lose a release: report it as not scheduled
                log.exception("spawning job %s of task #%s failed", index, pos)
                result = Spawned(pos, index, release, None, exc)
            self._done(result)


class Spawners:
    """The launcher threads of one runner and the results they hand back.

    ``wake`` is called (from a launcher thread) after each result is queued, so the
    scheduler thread notices it in its selector. Exits that a job's waiter reports
    before the scheduler thread announced the job wait in :meth:`park` until then.
    """

    def __init__(self, plans: list[tuple[str, sched.SchedPlan]], wake: Callable[[], None]) -> None:
        self._wake = wake
        self._results: deque[Spawned] = deque()
        rt = real_time([plan for _, plan in plans])
        self._threads = [TaskLauncher(name, rt, self._done) for name, _ in plans]
        self._busy = [False] * len(plans)
        self._early: list[Job] = []

    def start(self) -> None:
        for launcher in self._threads:
            launcher.start()

    def close(self) -> None:
        for launcher in self._threads:
            launcher.close()

    def _done(self, result: Spawned) -> None:  # launcher threads
        self._results.append(result)
        self._wake()

    def submit(self, pos: int, index: int, release: float, make: MakeJob) -> None:
        """Have task ``pos``'s launcher spawn the job ``make`` builds (scheduler thread)."""
        self._busy[pos] = True
        self._threads[pos].submit(pos, index, release, make)

    @property
    def in_flight(self) -> bool:
        """True while some spawn has not been collected by :meth:`results`."""
        return any(self._busy)

    def results(self) -> Iterator[Spawned]:
        """The results handed back so far, oldest first (scheduler thread)."""
        while self._results:
            result = self._results.popleft()
            self._busy[result.pos] = False
            yield result

    def park(self, job: Job) -> None:
        """Keep the exit of a job whose START has not gone out yet."""
        self._early.append(job)

    def unpark(self, job: Job) -> bool:
        """True (and forget it) if ``job`` had exited before its START."""
        if job in self._early:
            self._early.remove(job)
            return True
        return False
