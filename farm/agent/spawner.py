"""Job spawning off the runner's scheduler thread: one launcher thread per task.

The runner's scheduler thread only decides *when* a job is released; the
launcher thread of the job's task builds its Launch, spawns the process and
hands the result back (:class:`Spawned`). So a slow spawn (a big environment,
an exec that pages in a large binary, a fork under TCG) of one task never holds
back another task's release: each task has its own thread, and a task never
has two spawns in flight.

Pre-spawned jobs: once job k of a task has started, its launcher already
spawns job k+1 (:meth:`Spawners.prepare`) when it is a native built-in
(``Launch.gate``): the process exists with its policy, process group and
descriptors, blocked reading its stdin, a pipe (FARM_GATE=1,
farm/agent/native/workloads.c). The release only writes one byte to that pipe
(:meth:`Spawners.release`; START from then). A pre-spawn not done yet at the
release is released as soon as it is; a job without a gate is spawned at its
release as before (a failed exec stays a NOT_SCHEDULED of that release). A
pre-spawned job whose release is missed (NOT_SCHEDULED) or whose set stops is
dropped: killed, reaped, no event. Jobs 0 are pre-spawned by the start
request's thread (:meth:`Spawners.prespawn_firsts`), before the set's ``t0``
when its timing is watched (:func:`timed`), so they too wait at their gates
when released; a launcher thread starts with its task's first later spawn.

In a set with real-time tasks the scheduler thread, the launcher threads and
the jobs' waiter threads run SCHED_FIFO at the kernel's top priority with
reset-on-fork (:func:`farm.agent.sched.raise_thread`): no running job delays a
release, a spawn or the notice of an exit, and nothing they start inherits that
policy. Launchers and waiters are pool threads (:mod:`farm.agent.workers`),
raised once. Each job gets its own policy in the child before its exec (glibc's
posix_spawn, :mod:`farm.agent.pspawn`, or a ``preexec_fn``). Python threads share
one lock, the GIL: an agent thread of lower priority holding it while preempted
by a real-time job could still delay them; spawns at a release keep the GIL
across posix_spawn so that the new job cannot preempt such a holder right then
(a pre-spawn lets it go: its child blocks on the gate once exec'd, but may wait
for the CPU until then).
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from farm.agent import logs, sched, workers
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
    ready: Job | None = None  # pre-spawned job ``next``, held until its release
    gate: int = -1  # the pipe whose byte releases ``ready``
    pending: tuple[int, float] | None = None  # (index, release) reached before its job was ready
    next: int = 0  # the job being pre-spawned
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
    gated: bool = False  # a pre-spawn (its job unspawned when its Launch has no gate)
    gate: int = -1  # a pre-spawned job's gate: one byte releases it, end of file cancels it


MakeJob = Callable[[], Job]


def timed(tasks: Sequence[TaskSpec]) -> bool:
    """True if a set's first jobs should wait pre-spawned before its ``t0``.

    So when its timing is watched: several tasks (each job 0 would otherwise pay
    its spawn after ``t0``, one after the other on one CPU), a periodic task or
    a critical time. A lone one-shot job is released at once and spawned after,
    as quick a start as a set can get (dispatch latency counts to its release).
    """
    return len(tasks) > 1 or any(t.period > 0 or t.critical_ms > 0 for t in tasks)


#: cap of :func:`start_lead` (s)
MAX_LEAD = 0.05
_lead = 0.0  # smoothed time from a timed set's pre-spawns until its scheduler ran (s)


def start_lead() -> float:
    """How far after its jobs 0 are pre-spawned a timed set's ``t0`` should be (s).

    Covers the start of its scheduler thread (the reply, a pool thread's wake-up),
    so that it waits for ``t0`` rather than find it past. Learnt from the sets
    before (rises at once, decays slowly; nothing known: 0).
    """
    return min(_lead, MAX_LEAD)


def learn_lead(elapsed: float) -> None:
    global _lead
    _lead = elapsed if elapsed > _lead else 0.75 * _lead + 0.25 * elapsed


DROP_TIMEOUT = 10.0  # s to reap the dropped pre-spawned jobs of a set at its end


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
    """A (pool) thread spawning one task's jobs in order, reporting each through ``done``."""

    def __init__(self, name: str, rt: bool, done: Callable[[Spawned], None]) -> None:
        self.name = name
        self.rt = self._rt = bool(rt)
        self._done = done
        self._requests: queue.SimpleQueue[tuple[int, int, float, MakeJob, bool] | None] = (
            queue.SimpleQueue()
        )
        self._ended = threading.Event()
        self.started = False

    def start(self) -> None:
        """Run in a pool thread (:mod:`farm.agent.workers`; raised above all jobs when ``rt``)."""
        self.started = True
        workers.run(self._run, self._rt)

    def submit(
        self, pos: int, index: int, release: float, make: MakeJob, gated: bool = False
    ) -> None:
        """Spawn the job ``make`` builds (``gated``: pre-spawn it), from the launcher thread."""
        self._requests.put((pos, index, release, make, gated))

    def close(self, timeout: float = 5.0) -> None:
        """Let the thread end after the requests already submitted."""
        if not self.started:
            return
        self._requests.put(None)
        self._ended.wait(timeout)

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._ended.set()

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            pos, index, release, make, gated = request
            try:
                job = make()
                job.rt_waiter = self._rt
                gate = -1
                if not gated:
                    job.spawn()
                elif job.launch.gate:  # (else it is spawned at its release)
                    gate = _prespawn(job)
                result = Spawned(pos, index, release, job, None, gated, gate)
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                result = Spawned(pos, index, release, None, exc, gated)
            except Exception as exc:  # never lose a release: report it as not scheduled
                log.exception("spawning job %s of task #%s failed", index, pos)
                result = Spawned(pos, index, release, None, exc, gated)
            self._done(result)


def _prespawn(job: Job) -> int:
    """Spawn ``job`` held by its gate: the write end of the pipe on its stdin."""
    gate_r, gate_w = os.pipe()  # close-on-exec: no other job inherits it
    try:
        job.spawn(gate_r)
    except BaseException:
        os.close(gate_w)
        raise
    finally:
        os.close(gate_r)
    return gate_w


class Spawners:
    """The launcher threads of one runner and the results they hand back.

    ``wake`` is called (from a launcher thread) after each result is queued, so the
    scheduler thread notices it in its selector. Exits that a job's waiter reports
    before the scheduler thread announced the job wait in :meth:`park` until then.
    """

    def __init__(
        self,
        plans: list[tuple[str, sched.SchedPlan]],
        wake: Callable[[], None],
        maker: Callable[[TaskState, int, float], MakeJob] | None = None,
        started: Callable[[TaskState, Spawned], None] | None = None,
    ) -> None:
        self._wake = wake
        self._maker = maker
        self._started = started
        self._dropped: list[Job] = []  # pre-spawned jobs cancelled unreleased
        self._results: deque[Spawned] = deque()
        rt = real_time([plan for _, plan in plans])
        self._threads = [TaskLauncher(name, rt, self._done) for name, _ in plans]
        self._busy = [False] * len(plans)
        self._early: list[Job] = []

    def start(self) -> None:
        """Start the launcher threads now (else each at its task's first later spawn)."""
        for launcher in self._threads:
            if not launcher.started:
                launcher.start()

    def prespawn_firsts(self, states: Sequence[TaskState]) -> None:
        """Pre-spawn each task's gated job 0 in the calling thread (before the scheduler's).

        A job without a gate, or a failure, is left to its release (its launcher spawns it).
        """
        if self._maker is None:
            return
        for st in states:
            try:
                job = self._maker(st, 0, 0.0)()
                if not job.launch.gate:
                    continue  # spawned at its release, by its launcher
                job.rt_waiter = self._threads[st.pos].rt
                gate = _prespawn(job)
            except Exception as exc:  # (as a launcher's pre-spawn)
                log.info("pre-spawning job 0 of task #%s failed: %s", st.pos, exc)
                continue
            st.ready, st.gate, st.next = job, gate, 0

    def close(self, states: Sequence[TaskState] = ()) -> None:
        """Drop the pre-spawned jobs of ``states``, end the launcher threads, reap the dropped.

        Only a launcher with a spawn in flight is waited for (an idle one ends by
        itself: no thread switch on the way to the next set); pre-spawns it hands
        back now are dropped too.
        """
        for st in states:
            self.drop_ready(st)
        for pos, launcher in enumerate(self._threads):
            launcher.close(5.0 if self._busy[pos] else 0.0)
        while self._results:
            late = self._results.popleft()
            self._drop(late.job if late.gated else None, late.gate)
        deadline = time.monotonic() + DROP_TIMEOUT
        for job in self._dropped:
            if not job.join(max(0.0, deadline - time.monotonic())):
                log.error("dropped job %s.%s (pid %d) not reaped", job.task_id, job.index, job.pid)

    def _done(self, result: Spawned) -> None:  # launcher threads
        self._results.append(result)
        self._wake()

    def submit(
        self, pos: int, index: int, release: float, make: MakeJob, gated: bool = False
    ) -> None:
        """Have task ``pos``'s launcher spawn the job ``make`` builds (scheduler thread)."""
        self._busy[pos] = True
        launcher = self._threads[pos]
        if not launcher.started:  # at its task's first spawn after the set's start
            launcher.start()
        launcher.submit(pos, index, release, make, gated)

    def busy(self, pos: int) -> bool:
        """True while task ``pos`` has a spawn in flight (at most one per task)."""
        return self._busy[pos]

    @property
    def in_flight(self) -> bool:
        """True while some spawn has not been collected by :meth:`results`."""
        return any(self._busy)

    def results(
        self, states: Sequence[TaskState] = (), stopping: bool = False
    ) -> Iterator[Spawned]:
        """The spawns at a release handed back so far, oldest first (scheduler thread).

        Pre-spawns are taken in on the way (:meth:`_take`; ``states`` by position).
        """
        while self._results:
            result = self._results.popleft()
            self._busy[result.pos] = False
            if result.gated:
                self._take(states[result.pos], result, stopping)
            else:
                yield result

    def park(self, job: Job) -> None:
        """Keep the exit of a job whose START has not gone out yet (a dropped one's: never)."""
        if not job.cancelled:
            self._early.append(job)

    def unpark(self, job: Job) -> bool:
        """True (and forget it) if ``job`` had exited before its START."""
        if job in self._early:
            self._early.remove(job)
            return True
        return False

    # -- pre-spawned jobs (scheduler thread) ---------------------------------

    def prepare(self, st: TaskState, index: int) -> None:
        """Pre-spawn job ``index`` of ``st`` (unless a spawn is in flight: :meth:`_take`).

        Its release time is set when it goes (:meth:`release`).
        """
        st.next = index
        if not self._busy[st.pos] and self._maker is not None:
            self.submit(st.pos, index, 0.0, self._maker(st, index, 0.0), True)

    def release(self, st: TaskState, index: int, release: float) -> None:
        """Job ``index`` is due: its pre-spawned process goes, else it is spawned now."""
        st.pending = (index, release)
        self._try_go(st)

    def _try_go(self, st: TaskState) -> None:
        if st.pending is None or self._maker is None or self._started is None:
            return
        index, release = st.pending
        job = st.ready
        if job is None:
            if not self._busy[st.pos]:  # not pre-spawned: spawn it now
                st.pending = None
                self.submit(st.pos, index, release, self._maker(st, index, release))
            return  # else its spawn is in flight
        gate, st.gate = st.gate, -1
        st.ready = st.pending = None
        job.release = release
        if gate < 0:  # a program without the gate: spawned at its release
            self.submit(st.pos, index, release, lambda: job)
            return
        try:
            os.write(gate, b"g")
        except OSError:
            pass  # it died already: its exit follows its START
        job.start = time.monotonic()
        os.close(gate)
        self._started(st, Spawned(st.pos, index, release, job))

    def drop_ready(self, st: TaskState) -> None:
        """Cancel ``st``'s pre-spawned job, if any (it will not be released)."""
        job, gate, st.ready, st.gate = st.ready, st.gate, None, -1
        self._drop(job, gate)

    def _drop(self, job: Job | None, gate: int) -> None:
        if gate >= 0:
            os.close(gate)  # end of file: its gate exits by itself
        if job is not None and job.pid:
            job.cancelled = True  # its exit makes no event
            job.kill("CANCELLED")
            job.close_output()
            self._dropped.append(job)

    def _take(self, st: TaskState, result: Spawned, stopping: bool) -> None:
        """Take in a pre-spawn's result: the job waits for its release, or goes if it is due."""
        if result.job is None:  # it is spawned at its release instead (reported then)
            log.info(
                "pre-spawning job %s of task #%s failed: %s", result.index, st.pos, result.error
            )
        else:
            st.ready, st.gate = result.job, result.gate
            if st.done or stopping or result.index != st.next:
                self.drop_ready(st)  # stale: its release went by as NOT_SCHEDULED
        if st.pending is not None:
            self._try_go(st)
        elif st.ready is None and not (st.done or stopping) and result.index != st.next:
            self.prepare(st, st.next)
