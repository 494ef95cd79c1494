"""One job = one child process: spawning with limits, reaping, output tail, exit kind.

Each job runs in its own process group, in the agent's environment plus the
marker of :mod:`farm.agent.guard` (which kills it should the agent die without
stopping it), with, set in the child between fork and exec:

* ``executiontime`` > 0: a CPU budget. ``ITIMER_PROF`` (it survives execve;
  SIGPROF's default action terminates) fires after that much CPU time, and
  RLIMIT_CPU (whole seconds, inherited by forks) is a coarse backstop. A job
  stopped that way is EXIT_ERROR with detail ``budget exceeded``.
  Interpreter start-up counts toward the budget (~8 ms for built-ins).
* ``quota`` > 0: a memory limit. Built-in workloads cap their own address
  space at start-up size + quota and exit with ``workloads.EXIT_QUOTA`` on
  MemoryError -> OUT_OF_QUOTA. External programs (shell, uploaded binaries)
  get RLIMIT_AS = quota (the whole address space, shared libraries
  included); a peak RSS (``ru_maxrss`` from wait4) above the quota counts as
  OUT_OF_QUOTA, but ``ru_maxrss`` starts at the agent's own peak (fork copies
  it), so it can only judge quotas above that. An external program that is
  refused memory fails in its own way: EXIT_ERROR whose detail mentions the
  quota. (Exact accounting would need a memory cgroup per job.)
* the scheduling policy of :mod:`farm.agent.sched`;
* PR_SET_PDEATHSIG = SIGKILL, so jobs die with the agent.

A job that needs none of the limits (SCHED_OTHER or SCHED_FIFO, no budget, no
address-space limit: the common case) is started by glibc's posix_spawn
(:mod:`farm.agent.pspawn`, policy and all set before its exec), or without
ctypes by subprocess with no preexec_fn (vfork + exec) when it is SCHED_OTHER:
under TCG a fork of the agent plus Python in the child costs ~10 ms of guest
CPU more per job. Its death with the agent is then left to the guard alone
(pdeathsig too if no guard could be started).

stdout and stderr go to one pipe that the runner drains without blocking;
the last ``OUTPUT_TAIL`` bytes are kept. With ``Launch.stats`` (traffic
workloads) every complete output line that starts with ``{"traffic":`` and
parses as a JSON object is also queued in ``Job.stats`` for the runner to
turn into events. ``Launch.term_grace`` > 0: :meth:`Job.terminate` sends
SIGTERM first so the job can report before it is killed. The runner's
scheduler thread watches each job's pidfd (``os.pidfd_open``) in its selector
beside the output pipe: no thread per job and no thread switch between the
job's exit and its event. Once it is readable :meth:`Job.reap` kills what is
left of the job's process group, reaps the leader with ``wait4`` (exit status
+ rusage) and reports to the runner. Without pidfds (Linux < 5.3) a waiter
pool thread blocks in ``waitid`` instead and does the same.
"""

from __future__ import annotations

import json
import math
import os
import resource
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from farm.agent import childsetup, guard, logs, pspawn, sched, workers, workloads

log = logs.get_logger(__name__)

OUTPUT_TAIL = 64 * 1024
STATS_PREFIX = b'{"traffic":'  # farm.agent.traffic.STATS_PREFIX
MAX_STATS_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Launch:
    """What to execute for one job and under which limits."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    builtin: bool  # a farm built-in workload (knows EXIT_QUOTA)
    budget_s: float = 0.0  # CPU budget, 0 = none
    quota: int = 0  # bytes, 0 = unlimited
    sched: sched.SchedPlan = field(default_factory=sched.SchedPlan)
    output_tail: int = OUTPUT_TAIL
    stats: bool = False  # parse JSON stats lines of the output (traffic workloads)
    term_grace: float = 0.0  # s between SIGTERM and SIGKILL on a stop, 0 = SIGKILL at once
    summary: str = ""  # "cyclictest": its summary lines become the exit's ``latency_us``
    gate: bool = False  # farm-workload (built-in; --exec cyclictest): pre-spawned, held


@dataclass(slots=True)
class Outcome:
    """How a reaped job ended."""

    status: int  # waitpid status
    rusage: Any  # resource.struct_rusage
    end: float  # monotonic time the exit was seen

    @property
    def cpu_s(self) -> float:
        return float(self.rusage.ru_utime + self.rusage.ru_stime)

    @property
    def maxrss(self) -> int:
        return int(self.rusage.ru_maxrss) * 1024

    @property
    def code(self) -> int:
        """Exit code, or minus the signal number (like Popen.returncode)."""
        return os.waitstatus_to_exitcode(self.status)


class Job:
    """A spawned job process; its waiter thread reports the exit through ``on_exit``."""

    def __init__(
        self,
        task_id: int,
        index: int,
        release: float,
        launch: Launch,
        on_exit: Callable[[Job], None],
    ) -> None:
        self.task_id = task_id
        self.index = index
        self.release = release
        self.launch = launch
        self.start = 0.0
        self.pid = 0
        self.parent_maxrss = 0  # the agent's peak RSS when it forked this job
        self.sched_error: str | None = None
        self.outcome: Outcome | None = None
        self.killed_as: str | None = None  # event type already sent when the agent killed it
        self.announced = False  # the runner sent its START
        self.rt_waiter = False  # the waiter thread runs above all jobs (sched.raise_thread)
        self.out_fd = -1
        self._tail = bytearray()
        self._line = bytearray()  # incomplete last output line (stats parsing)
        self.stats: list[dict[str, Any]] = []  # stats lines not yet turned into events
        self.last_stats: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._reaped = False
        self._on_exit = on_exit
        self._popen: subprocess.Popen[bytes] | None = None
        self._waiting = False  # a waiter thread was started
        self._waited = threading.Event()  # ... and has reported the exit
        self.cancelled = False  # pre-spawned, dropped unreleased: no event (spawner.Spawners)
        self.pidfd = -1  # readable once the process has exited (None: a waiter thread)

    # -- spawning -----------------------------------------------------------

    def spawn(self, gate_fd: int = -1) -> None:
        """Start the process (raises OSError/SubprocessError if it cannot be started).

        With the guard running, no limits and SCHED_OTHER or SCHED_FIFO (the common
        case) glibc's posix_spawn starts it (:mod:`farm.agent.pspawn`); otherwise
        subprocess, with a ``preexec_fn`` only when the child needs set-up.
        ``gate_fd``: pre-spawn it with that stdin and FARM_GATE=1 (:mod:`farm.agent.spawner`).
        """
        launch = self.launch
        guard_entry = guard.entry()
        env = launch.env if gate_fd < 0 else {**launch.env, "FARM_GATE": "1"}
        if guard_entry is not None:
            env = {**env, guard_entry[0]: guard_entry[1]}
        self.parent_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        plain = not (launch.budget_s > 0 or (launch.quota > 0 and not launch.builtin))
        posix = plain and guard_entry is not None and launch.sched.policy in ("other", "fifo")
        if posix and pspawn.available():
            self._posix_spawn(env, gate_fd)
            return
        setup = childsetup.factory(launch, pdeathsig=guard_entry is None)
        out_r, out_w = os.pipe()
        status_r, status_w = os.pipe() if setup is not None else (-1, -1)
        child_setup = None if setup is None else setup(status_w)
        try:
            # without a preexec_fn subprocess uses vfork: no page-table copy, no Python
            # in the child (~10 ms of guest CPU per job under TCG)
            popen = subprocess.Popen(
                launch.argv,
                stdin=gate_fd if gate_fd >= 0 else subprocess.DEVNULL,
                stdout=out_w,
                stderr=subprocess.STDOUT,
                cwd=launch.cwd,
                env=env,
                close_fds=True,
                process_group=0,
                preexec_fn=child_setup,
                restore_signals=True,
            )
        except BaseException:
            os.close(out_r)
            if status_r >= 0:
                os.close(status_r)
            raise
        finally:
            os.close(out_w)
            if status_w >= 0:
                os.close(status_w)
        self._popen = popen
        self.start = time.monotonic()
        self.pid = popen.pid
        problem = b""
        if status_r >= 0:
            try:  # the child wrote before exec, and Popen returns after exec: never wait
                os.set_blocking(status_r, False)
                problem = os.read(status_r, 4096)
            except BlockingIOError:
                pass
            finally:
                os.close(status_r)
        self.sched_error = problem.decode(errors="replace") or None
        self._watch(out_r)

    def _posix_spawn(self, env: dict[str, str], gate_fd: int) -> None:
        launch = self.launch
        out_r, out_w = os.pipe()
        try:
            self.pid, self.sched_error = pspawn.spawn(
                launch.argv, env, launch.cwd, out_w, launch.sched, gate_fd
            )
        except BaseException:
            os.close(out_r)
            raise
        finally:
            os.close(out_w)
        self.start = time.monotonic()
        self._watch(out_r)

    def _watch(self, out_r: int) -> None:
        """Read the output pipe from now on; the exit is watched through a pidfd (the
        runner's selector, :meth:`reap`), else by a waiter (a pool thread, never waited
        for: :mod:`farm.agent.workers`; raised above all jobs when ``rt_waiter``)."""
        os.set_blocking(out_r, False)
        self.out_fd = out_r
        self._waiting = True
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfds here (Linux < 5.3)
            workers.run(self._wait, self.rt_waiter)

    def reap(self, timeout: float = 0.0) -> bool:
        """Reap and report the job once its pidfd says it exited (up to ``timeout`` s).

        True once reaped (then or before). One thread only (the runner's
        scheduler): it also unregistered the pidfd from its selector first.
        """
        if self._waited.is_set():
            return True
        fd = self.pidfd
        if fd < 0:
            return False
        poller = select.poll()  # (select.select fails on descriptors above 1023)
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0, math.ceil(timeout * 1000.0))):
            return False
        self.pidfd = -1
        try:
            self._wait_and_report()
        finally:
            os.close(fd)
            self._waited.set()
        return True

    # -- reaping ------------------------------------------------------------

    def _wait(self) -> None:
        try:
            self._wait_and_report()
        finally:
            self._waited.set()

    def _wait_and_report(self) -> None:
        pid = self.pid
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        end = time.monotonic()
        with self._lock:
            try:
                os.killpg(pid, signal.SIGKILL)  # stragglers of the job's group
            except (ProcessLookupError, PermissionError):
                pass
            try:
                _, status, rusage = os.wait4(pid, 0)
            except ChildProcessError:
                status, rusage = 0, resource.getrusage(resource.RUSAGE_CHILDREN)
                log.warning("job %s.%s: pid %d was reaped elsewhere", self.task_id, self.index, pid)
            self._reaped = True
        if self._popen is not None:
            self._popen.returncode = os.waitstatus_to_exitcode(status)
        self.outcome = Outcome(status, rusage, end)
        self._on_exit(self)

    def kill(self, as_type: str) -> bool:
        """SIGKILL the job's process group unless it is already reaped; remember why."""
        with self._lock:
            if self._reaped:
                return False
            self.killed_as = as_type
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return True

    def terminate(self, as_type: str) -> bool:
        """SIGTERM the job's process group unless it is already reaped; remember why."""
        with self._lock:
            if self._reaped:
                return False
            self.killed_as = as_type
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            return True

    def join(self, timeout: float) -> bool:
        """Wait for the waiter thread (the job reaped, reported); True if it finished."""
        if not self._waiting:
            return True
        if self.pidfd >= 0:
            return self.reap(timeout)
        return self._waited.wait(timeout)

    # -- output -------------------------------------------------------------

    def read_output(self, max_reads: int = 64) -> bool:
        """Drain what the pipe holds now (never blocks, bounded work); True at end of file."""
        if self.out_fd < 0:
            return True
        limit = self.launch.output_tail
        for _ in range(max_reads):
            try:
                chunk = os.read(self.out_fd, 65536)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not chunk:
                return True
            if self.launch.stats:
                self._scan_stats(chunk)
            self._tail += chunk
            if len(self._tail) > limit:
                del self._tail[: len(self._tail) - limit]
        return False

    def _scan_stats(self, chunk: bytes) -> None:
        """Queue the stats objects of the complete lines in ``chunk`` (bounded line length)."""
        self._line += chunk
        *lines, rest = self._line.split(b"\n")
        self._line = bytearray(rest) if len(rest) <= MAX_STATS_LINE else bytearray()
        for line in lines:
            if not line.startswith(STATS_PREFIX):
                continue
            try:
                stats = json.loads(line)
            except ValueError:
                continue
            if isinstance(stats, dict):
                self.stats.append(stats)
                self.last_stats = stats

    def close_output(self) -> None:
        """Stop reading the job's output (after its exit)."""
        if self.out_fd >= 0:
            self.read_output()
            os.close(self.out_fd)
            self.out_fd = -1

    def output(self) -> str:
        """The captured tail of stdout+stderr."""
        return self._tail.decode("utf-8", errors="replace")

    def extras(self) -> dict[str, Any]:
        """Extra fields of its exit event: ``stats`` (traffic), ``latency_us`` (cyclictest)."""
        out: dict[str, Any] = {"stats": self.last_stats} if self.launch.stats else {}
        if self.launch.summary == "cyclictest":
            from farm.agent import cyclictest

            figures = cyclictest.summary(self.output())
            if figures is not None:
                out["latency_us"] = figures
        return out


def preload() -> None:
    """Load what spawning needs (ctypes, libc, the guard) ahead of time, so no release pays."""
    childsetup.pdeathsig_setter()
    pspawn.available()
    guard.entry()


def classify(job: Job, critical_ms: float) -> tuple[str, str | None]:
    """Event type and detail for a job that ended on its own (see the module docstring)."""
    outcome = job.outcome
    assert outcome is not None
    launch = job.launch
    status = outcome.status
    signo = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    budget = launch.budget_s
    if budget > 0 and (
        signo in (signal.SIGPROF, signal.SIGXCPU)
        or (signo == signal.SIGKILL and outcome.cpu_s >= budget)
    ):
        return "EXIT_ERROR", (
            f"budget exceeded: used {outcome.cpu_s * 1000:.0f} ms CPU of {budget * 1000:g} ms"
        )
    if launch.quota > 0:
        if launch.builtin and code == workloads.EXIT_QUOTA:
            return "OUT_OF_QUOTA", f"allocation beyond the quota of {launch.quota} bytes"
        # ru_maxrss starts at the agent's own peak (fork copies it), so it only
        # measures the job once above that
        if (
            not launch.builtin
            and outcome.maxrss > launch.quota
            and outcome.maxrss > job.parent_maxrss
        ):
            return "OUT_OF_QUOTA", (
                f"peak RSS {outcome.maxrss} bytes exceeds the quota of {launch.quota} bytes"
            )
    note = ""
    if launch.quota > 0 and not launch.builtin:
        note = f" (address space limited to the quota of {launch.quota} bytes)"
    if signo:
        return "EXIT_ERROR", f"killed by signal {_signal_name(signo)}{note}"
    if code:
        return "EXIT_ERROR", f"exit status {code}{note}"
    if critical_ms > 0:
        late = (outcome.end - job.release) * 1000.0
        if late > critical_ms:
            return "EXIT_CRITICAL", (
                f"finished {late:.1f} ms after release, critical time {critical_ms:g} ms"
            )
    figures = job.extras().get("latency_us")
    if figures:
        from farm.agent import cyclictest

        return "EXIT", cyclictest.describe(figures)
    return "EXIT", None


def _signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return str(signo)
