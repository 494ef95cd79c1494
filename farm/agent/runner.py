"""Runs one task set: releases jobs on time and turns their ends into events.

One scheduler thread per task set owns all job state. It sleeps in a
selector until the earliest pending timer in a heap (release times, ends of
a last job's window), a job's output pipe or pidfd (it exited) is readable,
or the wake pipe is written (a launcher has a result, a stop was requested).
No polling, and no thread per job.

Rules (times in ms; ``t0``: the set's start, after its jobs 0 were pre-spawned when
:func:`spawner.timed`):

* job k of a task is released at ``t0 + offset + k * period`` (absolute, no
  drift); ``numberofjobs`` jobs, 0 = until stopped. With period 0 the jobs
  run back to back (job k+1 is released when job k ends).
* START when the job is released (extras: ``release``, ``pid``, ``sched``).
  Spawning happens in the task's own launcher thread (:mod:`farm.agent.spawner`),
  so one task's slow spawn never delays another task's release. There a native
  built-in job is pre-spawned (policy and all) once the previous one started;
  its release only writes a byte to its gate. Other jobs spawn at their release.
* a job that ends on its own gets one of EXIT, EXIT_CRITICAL (ended later
  than release + criticaltime, else deadline; 0 = no check), EXIT_ERROR
  (non-zero status, signal, or ``budget exceeded``) or OUT_OF_QUOTA; extras:
  ``end``, ``status`` (exit code or -signal), ``cpu`` (s), ``maxrss`` (bytes),
  ``output`` (tail of stdout+stderr), for cyclictest ``latency_us``.
* with period > 0 every job, the last one included, may run at most one
  period: still running at its task's next release (or at the end of the
  last job's window) it is killed with EXIT_PERIOD, then the next job is
  released. This also makes ``period`` a wall-clock limit for one-shot jobs.
* NOT_SCHEDULED when a release is skipped: the process could not be spawned,
  or the agent reached the release only after that job's whole window had
  passed. Three spawn failures in a row end a period-0 task.
* JOBS_DONE (job None) after the task's last job.
* stop: every running job's process group is killed, each gets EXIT_EXTERNAL,
  and :meth:`Runner.stop` returns once all are reaped. No JOBS_DONE follows.
* NOTICE (job None) for scheduling remarks, at most one per task per kind.
* traffic jobs (``Launch.stats``): a NOTICE with the job's number, detail
  ``traffic stats {json}`` and extra ``stats`` (the object) for every stats
  line the job prints; its exit event carries ``stats`` = the last one (the
  final statistics). On a stop such a job gets SIGTERM and up to
  ``Launch.term_grace`` s to print them before it is killed.

Event ``ts``: ``time.monotonic()`` at emission (one emitting thread: never decreasing).
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from farm.agent import jobs, logs, sched, spawner, waitset, workers
from farm.agent.jobs import Job, Launch, classify
from farm.agent.spawner import Spawned, Spawners, TaskState, raise_scheduler, real_time, timed
from farm.agent.taskspec import TaskSpec
from farm.agent.waitset import EXITED

log = logs.get_logger(__name__)

Emit = Callable[[dict[str, Any]], None]
Launcher = Callable[[TaskSpec, int, sched.SchedPlan], Launch]

_RELEASE, _WINDOW_END = 0, 1
MAX_SPAWN_FAILURES = 3
REAP_TIMEOUT = 10.0


class Runner:
    """Runs a validated task set in a scheduler thread, streaming events to ``emit``."""

    def __init__(
        self,
        tasks: list[TaskSpec],
        launcher: Launcher,
        emit: Emit,
        on_finish: Callable[[Runner], None] | None = None,
        t0: float | None = None,
    ) -> None:
        jobs.preload()  # ctypes and libc before t0, not at the first release
        self.t0 = time.monotonic() if t0 is None else t0
        self._states = [
            TaskState(t, sched.plan(t.priority, t.executiontime, t.critical_ms, t.period), pos)
            for pos, t in enumerate(tasks)
        ]
        self._by_id = {st.spec.id: st for st in self._states}
        self._launcher = launcher
        self._emit_cb = emit
        self._on_finish = on_finish
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._seq = itertools.count()
        self._exits: deque[Job] = deque()
        self._live: set[Job] = set()
        plans = [(str(st.spec.id), st.plan) for st in self._states]
        self._spawners = Spawners(plans, self._wake, self._maker, self._started)
        self._stop = threading.Event()
        self._tid, self._finished = 0, threading.Event()  # (the scheduler thread's id)
        self._waits = waitset.take()
        self._early = t0 is None and timed(tasks)
        if self._early:  # its jobs 0 wait at their gates before t0: released on time
            self._spawners.prespawn_firsts(self._states)
            self._ready_at = time.monotonic()
            self.t0 = self._ready_at + spawner.start_lead()

    # -- public, any thread -------------------------------------------------

    def start(self) -> None:
        """Start the scheduler thread (a pool thread); a timed set's launchers too (for its
        jobs 0 without a gate), else its jobs 0 are pre-spawned now, in this thread."""
        if self._early:
            self._spawners.start()
        else:
            self._spawners.prespawn_firsts(self._states)
        workers.run(self._run, real_time([st.plan for st in self._states]))

    @property
    def finished(self) -> bool:
        """True once every task is done or the set was stopped (all jobs reaped)."""
        return self._finished.is_set()

    @property
    def all_done(self) -> bool:
        """True once every task sent JOBS_DONE (set before the last one goes out)."""
        return all(st.done for st in self._states)

    @property
    def active(self) -> bool:
        """True while jobs may still be released (not finished, not all done, not stopped)."""
        return not (self._finished.is_set() or self._stop.is_set() or self.all_done)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until finished; True if it is."""
        return self._finished.wait(timeout)

    def stop(self, timeout: float = REAP_TIMEOUT + 5.0) -> bool:
        """Kill every job (EXIT_EXTERNAL) and wait until all are reaped; True if done."""
        self._stop.set()
        self._wake()
        return self._finished.wait(timeout)

    def plans(self) -> list[dict[str, Any]]:
        """Planned scheduling policy per task (before any kernel refusal)."""
        return [{"id": st.spec.id, "sched": st.plan.describe()} for st in self._states]

    def snapshot(self) -> dict[str, Any]:
        """Task ids, running jobs and finished tasks (for status replies)."""
        running: dict[str, int] = {}
        for st in self._states:
            job = st.running
            if job is not None:
                running[str(st.spec.id)] = job.index
        return {
            "t0": self.t0,
            "tasks": [st.spec.id for st in self._states],
            "running_jobs": running,
            "done": [st.spec.id for st in self._states if st.done],
        }

    # -- scheduler thread ---------------------------------------------------

    def _wake(self) -> None:
        self._waits.wake()

    def _job_exited(self, job: Job) -> None:  # the scheduler thread (pidfd) or a waiter thread
        self._exits.append(job)
        if threading.get_ident() != self._tid:
            self._wake()

    def _emit(
        self, task_id: int, job: int | None, kind: str, detail: str | None = None, **extra: Any
    ) -> None:
        event = {"task_id": task_id, "job": job, "type": kind, "ts": time.monotonic()}
        event.update(detail=detail, **extra)
        try:
            self._emit_cb(event)
        except Exception:
            log.exception("event sink failed for %s", event)

    def _notice(self, st: TaskState, key: str, text: str) -> None:
        if key not in st.noticed:
            st.noticed.add(key)
            self._emit(st.spec.id, None, "NOTICE", text)

    def _push(self, when: float, kind: int, task: int, index: int) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, task, index))

    def _run(self) -> None:
        self._tid = threading.get_ident()
        if self._early:
            spawner.learn_lead(time.monotonic() - self._ready_at)
        raise_scheduler([st.plan for st in self._states])
        try:
            for i, st in enumerate(self._states):
                for note in st.plan.notes:
                    self._notice(st, "plan", note)
                self._push(st.release_time(self.t0, 0), _RELEASE, i, 0)
                if st.ready is None:
                    self._spawners.prepare(st, 0)
            while True:
                self._handle_spawned()
                self._handle_exits()
                if self._stop.is_set():
                    self._kill_all()
                    break
                self._handle_due()
                if self.all_done:
                    break
                timeout = max(0.0, self._heap[0][0] - time.monotonic()) if self._heap else None
                self._handle_ready(timeout)
        except Exception:
            log.exception("runner failed; killing its jobs")
            self._kill_all()
        finally:
            self._spawners.close(self._states)
            self._reap_all()
            self._finished.set()
            if self._on_finish is not None:
                try:
                    self._on_finish(self)
                except Exception:
                    log.exception("on_finish callback failed")

    def _handle_ready(self, timeout: float | None) -> None:
        """Sleep until something is due or ready; reap exited jobs, read their output."""
        for kind, job in self._waits.wait(timeout):
            if kind == EXITED:
                self._reap(job)
            else:
                if job.read_output():
                    self._waits.unwatch_output(job)
                self._emit_stats(job)

    def _reap(self, job: Job, timeout: float = 0.0) -> bool:
        """Reap ``job`` (its exit queued in ``_exits``); its pidfd leaves the selector first."""
        self._waits.unwatch_exit(job)
        return job.join(timeout)

    def _forget(self, job: Job) -> None:
        self._waits.unwatch_output(job)
        job.close_output()
        self._live.discard(job)

    def _emit_stats(self, job: Job) -> None:
        """A NOTICE per stats line the job printed since the last call."""
        while job.stats:
            stats = job.stats.pop(0)
            text = json.dumps(stats, separators=(",", ":"))
            self._emit(job.task_id, job.index, "NOTICE", f"traffic stats {text}", stats=stats)

    def _handle_exits(self) -> None:
        while self._exits:
            job = self._exits.popleft()
            if not job.announced:
                self._spawners.park(job)  # its START is still to come
                continue
            self._forget(job)
            self._emit_stats(job)
            if job.killed_as is not None:
                continue  # its event went out when the agent killed it
            st = self._by_id[job.task_id]
            if st.running is job:
                st.running = None
            kind, detail = classify(job, st.spec.critical_ms)
            out = job.outcome
            assert out is not None
            self._emit(
                st.spec.id,
                job.index,
                kind,
                detail,
                end=out.end,
                status=out.code,
                cpu=out.cpu_s,
                maxrss=out.maxrss,
                output=job.output(),
                **job.extras(),
            )
            self._after_job(st, job.index)

    def _after_job(self, st: TaskState, index: int) -> None:
        """Bookkeeping once job ``index`` is over (ended, killed or skipped)."""
        if st.is_last(index):
            st.done = True
            self._emit(st.spec.id, None, "JOBS_DONE")
        elif st.spec.period <= 0:
            self._push(time.monotonic(), _RELEASE, st.pos, index + 1)

    def _handle_due(self) -> None:
        while self._heap and self._heap[0][0] <= time.monotonic():
            when, _, kind, i, index = heapq.heappop(self._heap)
            st = self._states[i]
            if st.done:
                continue
            if kind == _WINDOW_END:
                if st.running is not None and st.running.index == index:
                    self._overrun(st)
                if not st.done:  # (it may have ended on its own just now)
                    st.done = True
                    self._emit(st.spec.id, None, "JOBS_DONE")
                continue
            if st.running is not None:
                self._overrun(st)
            self._release(st, i, index, when)

    def _overrun(self, st: TaskState) -> None:
        """The running job of ``st`` reached its next release: EXIT_PERIOD unless it just ended."""
        self._handle_exits()
        job = st.running
        if job is None:
            return
        st.running = None
        if job.kill("EXIT_PERIOD"):
            self._emit(
                st.spec.id,
                job.index,
                "EXIT_PERIOD",
                f"still running at its next release ({st.spec.period:g} ms period)",
            )
        else:
            self._report_ended(st, job)

    def _report_ended(self, st: TaskState, job: Job) -> None:
        """``job`` ended by itself while the agent was about to kill it: report that end now."""
        self._reap(job, REAP_TIMEOUT)  # its exit is about to be queued
        st.running = job
        self._handle_exits()

    def _release(self, st: TaskState, i: int, index: int, release: float) -> None:
        spec = st.spec
        periodic = spec.period > 0
        if periodic and time.monotonic() >= release + spec.period / 1000.0:
            self._emit(spec.id, index, "NOT_SCHEDULED", "release reached after its whole period")
            self._next_periodic(st, i, index)
            return
        if not periodic and index > 0:
            release = time.monotonic()  # back to back: released when the previous one ended
        self._spawners.release(st, index, release)

    def _maker(self, st: TaskState, index: int, release: float) -> Callable[[], Job]:
        """What builds job ``index`` of ``st`` (called in the task's launcher thread)."""
        return lambda: Job(
            st.spec.id, index, release, self._launcher(st.spec, index, st.plan), self._job_exited
        )

    def _handle_spawned(self) -> None:  # the launchers' results: START or NOT_SCHEDULED
        for result in self._spawners.results(self._states, self._stop.is_set()):
            self._started(self._states[result.pos], result)

    def _await_spawns(self) -> None:
        """Wait until no spawn is in flight (a stop kills what they started)."""
        deadline = time.monotonic() + REAP_TIMEOUT
        while self._spawners.in_flight and time.monotonic() < deadline:
            self._handle_ready(0.05)
            self._handle_spawned()

    def _started(self, st: TaskState, result: Spawned) -> None:
        spec, i, index, release, job = st.spec, result.pos, result.index, result.release, result.job
        periodic = spec.period > 0
        if job is None:
            st.failures += 1
            why = f"could not start the job: {result.error}"
            self._emit(spec.id, index, "NOT_SCHEDULED", why)
            if not periodic and st.failures >= MAX_SPAWN_FAILURES and not st.is_last(index):
                st.done = True
                gave_up = f"gave up after {st.failures} spawn failures in a row"
                self._emit(spec.id, None, "JOBS_DONE", gave_up)
            elif periodic:
                self._next_periodic(st, i, index)
            else:
                self._after_job(st, index)
            return
        st.failures = 0
        job.announced = True
        self._live.add(job)
        self._waits.watch(job)
        if job.sched_error:
            self._notice(st, "sched", job.sched_error)
        applied = "other" if job.sched_error else st.plan.describe()
        st.running = job
        self._emit(spec.id, index, "START", release=release, pid=job.pid, sched=applied)
        if self._spawners.unpark(job):  # it ended before this START: report that now
            self._exits.append(job)
        if periodic:
            if st.is_last(index):
                self._push(release + spec.period / 1000.0, _WINDOW_END, i, index)
            else:
                self._push(st.release_time(self.t0, index + 1), _RELEASE, i, index + 1)
        if not st.is_last(index):
            self._spawners.prepare(st, index + 1)

    def _next_periodic(self, st: TaskState, i: int, index: int) -> None:
        self._spawners.drop_ready(st)  # (job ``index``'s, if its release was missed)
        if st.is_last(index):
            st.done = True
            self._emit(st.spec.id, None, "JOBS_DONE")
        else:
            self._push(st.release_time(self.t0, index + 1), _RELEASE, i, index + 1)
            self._spawners.prepare(st, index + 1)

    def _kill_all(self) -> None:
        self._await_spawns()
        self._handle_exits()
        graceful: list[tuple[TaskState, Job]] = []
        for st in self._states:
            job = st.running
            if job is None:
                continue
            if job.launch.term_grace > 0 and job.terminate("EXIT_EXTERNAL"):
                graceful.append((st, job))
                continue
            st.running = None
            if job.kill("EXIT_EXTERNAL"):
                self._emit(st.spec.id, job.index, "EXIT_EXTERNAL", "stopped by request")
            else:
                self._report_ended(st, job)
        if graceful:
            self._finish_terminated(graceful)

    def _finish_terminated(self, graceful: list[tuple[TaskState, Job]]) -> None:
        """Give SIGTERM'ed jobs their grace, SIGKILL the rest, report with their last stats."""
        deadline = time.monotonic() + max(job.launch.term_grace for _, job in graceful)
        for st, job in graceful:
            self._reap(job, max(0.0, deadline - time.monotonic()))
            job.kill("EXIT_EXTERNAL")  # no-op once reaped
            st.running = None
            job.read_output(max_reads=1024)  # the final stats line, if it came
            self._emit_stats(job)
            self._emit(
                st.spec.id,
                job.index,
                "EXIT_EXTERNAL",
                "stopped by request",
                **job.extras(),
            )

    def _reap_all(self) -> None:
        deadline = time.monotonic() + REAP_TIMEOUT
        for job in list(self._live):
            if not self._reap(job, max(0.0, deadline - time.monotonic())):
                log.error("job %s.%s (pid %d) not reaped in time", job.task_id, job.index, job.pid)
        try:
            self._handle_exits()  # jobs that ended on their own just before a stop
        except Exception:
            log.exception("could not report the last job exits")
        if self._live:
            return  # a waiter may still write to the wake pipe: keep it open
        self._waits.close()
