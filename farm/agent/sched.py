"""Real-time scheduling of job processes: SCHED_FIFO, SCHED_DEADLINE, or best effort.

Mapping of a task's ``priority`` (Linux meaning: a larger number is more urgent):

* 0 (or missing): SCHED_OTHER, the normal time-sharing policy.
* 1..127: SCHED_FIFO with that priority, clamped to the kernel's maximum (99
  on Linux); a clamp is announced by a NOTICE.
* 128: SCHED_DEADLINE (EDF) with runtime = executiontime, deadline =
  criticaltime, else deadline, else period, and period = period (or the
  deadline when the period is 0). The runtime is clamped to the relative
  deadline and to the kernel's real-time share (95 % by default) of it, so a
  single task always passes the kernel's admission test on one CPU;
  executiontime 0 means "the whole share". ``SCHED_FLAG_RESET_ON_FORK`` is
  set so a job can still fork (its children run as SCHED_OTHER).

The policy is applied in the job's child process before its exec (by glibc's
posix_spawn, :mod:`farm.agent.pspawn`, or between fork and exec, see
:func:`child_applier`), so its first instruction already runs under it. When
the kernel refuses (EPERM without CAP_SYS_NICE, EBUSY from deadline admission
control, ENOSYS/EINVAL on kernels without it, containers...), the job runs
best effort (SCHED_OTHER) and the agent emits one NOTICE for the task.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EDF_PRIORITY = 128
SCHED_DEADLINE = 6
SCHED_FLAG_RESET_ON_FORK = 0x01
_MIN_NS = 1024  # kernel minimum for runtime and deadline

#: sched_setattr syscall numbers by machine
_SYS_SCHED_SETATTR = {
    "x86_64": 314,
    "amd64": 314,
    "i386": 351,
    "i686": 351,
    "aarch64": 274,
    "arm64": 274,
    "riscv64": 274,
    "armv7l": 380,
    "armv6l": 380,
    "ppc64le": 355,
    "ppc64": 355,
    "s390x": 345,
}


@dataclass(frozen=True, slots=True)
class SchedPlan:
    """How a task's jobs should be scheduled, decided once per task in the agent."""

    policy: str = "other"  # "other" | "fifo" | "deadline"
    priority: int = 0
    runtime_ns: int = 0
    deadline_ns: int = 0
    period_ns: int = 0
    notes: tuple[str, ...] = ()  # remarks known before any job runs (clamps, fallbacks)

    def describe(self) -> str:
        """Short human form, e.g. ``fifo:10`` or ``deadline:2ms/10ms/10ms``."""
        if self.policy == "fifo":
            return f"fifo:{self.priority}"
        if self.policy == "deadline":
            return (
                f"deadline:{self.runtime_ns / 1e6:g}ms/{self.deadline_ns / 1e6:g}ms/"
                f"{self.period_ns / 1e6:g}ms"
            )
        return "other"


def _rt_share() -> float:
    """Fraction of each period the kernel grants real-time tasks (0.95 by default)."""
    try:
        with open("/proc/sys/kernel/sched_rt_runtime_us") as fh:
            runtime = int(fh.read())
        with open("/proc/sys/kernel/sched_rt_period_us") as fh:
            period = int(fh.read())
    except (OSError, ValueError):
        return 0.95
    if runtime < 0 or period <= 0:
        return 1.0
    return min(1.0, runtime / period)


def plan(priority: int, executiontime_ms: float, critical_ms: float, period_ms: float) -> SchedPlan:
    """Decide the policy for a task (see the module docstring for the rules)."""
    if priority <= 0:
        return SchedPlan()
    if priority < EDF_PRIORITY:
        top = os.sched_get_priority_max(os.SCHED_FIFO)
        if priority > top:
            note = f"priority {priority} clamped to the kernel maximum {top} (SCHED_FIFO)"
            return SchedPlan("fifo", top, notes=(note,))
        return SchedPlan("fifo", priority)
    deadline_ms = critical_ms or period_ms
    if deadline_ms <= 0:
        note = "SCHED_DEADLINE needs a period, deadline or criticaltime; running best effort"
        return SchedPlan(notes=(note,))
    period_ns = int((period_ms or deadline_ms) * 1e6)
    deadline_ns = min(int(deadline_ms * 1e6), period_ns)
    runtime_ns = int(executiontime_ms * 1e6) if executiontime_ms > 0 else deadline_ns
    runtime_ns = min(runtime_ns, int(deadline_ns * _rt_share()))
    if runtime_ns < _MIN_NS or deadline_ns < _MIN_NS:
        note = "SCHED_DEADLINE parameters below the kernel minimum of 1024 ns; running best effort"
        return SchedPlan(notes=(note,))
    return SchedPlan("deadline", 0, runtime_ns, deadline_ns, period_ns)


def _explain(err: int, policy: str) -> str:
    name = errno.errorcode.get(err, str(err))
    why = {
        errno.EPERM: "not permitted (needs root or CAP_SYS_NICE; containers often forbid it)",
        errno.EBUSY: "refused by the kernel's deadline admission control (bandwidth)",
        errno.ENOSYS: "not supported by this kernel",
        errno.EINVAL: "rejected as invalid or unsupported by this kernel",
    }.get(err, os.strerror(err))
    return f"{policy} {name}: {why}; running best effort (SCHED_OTHER)"


_libc: Any = None


def load_libc() -> Any:
    """The C library through ctypes (loaded once, in the agent, never in a child)."""
    global _libc
    if _libc is None:
        import ctypes  # lazily: a trimmed runtime may lack it

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def raise_thread() -> str | None:
    """Run the calling thread SCHED_FIFO at the top priority, reset-on-fork; why not, or None.

    For the agent's own threads (releases, spawns, exits), so no real-time job
    delays them; nothing they start inherits the policy.
    """
    top = os.sched_get_priority_max(os.SCHED_FIFO)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(top))
    except OSError as exc:
        return str(exc)
    return None


def child_applier(sched: SchedPlan) -> Callable[[], str | None]:
    """A function to run in the forked child before exec: apply ``sched``.

    Everything that allocates or may fail (ctypes, buffers) is prepared here
    in the parent; the returned function only makes system calls. It returns
    None on success (or for SCHED_OTHER) and otherwise the NOTICE text.
    """
    if sched.policy == "fifo":
        param = os.sched_param(sched.priority)

        def apply_fifo() -> str | None:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, param)
            except OSError as exc:
                return _explain(exc.errno or 0, f"SCHED_FIFO {sched.priority}")
            return None

        return apply_fifo
    if sched.policy == "deadline":
        machine = os.uname().machine
        nr = _SYS_SCHED_SETATTR.get(machine.lower())
        if nr is None:
            msg = f"SCHED_DEADLINE: no sched_setattr number known for {machine}"
            return lambda: msg + "; running best effort (SCHED_OTHER)"
        try:
            import ctypes
            import struct

            libc = load_libc()
            attr = struct.pack(
                "=IIQiIQQQ",
                48,
                SCHED_DEADLINE,
                SCHED_FLAG_RESET_ON_FORK,
                0,
                0,
                sched.runtime_ns,
                sched.deadline_ns,
                sched.period_ns,
            )
            buf = ctypes.create_string_buffer(attr, len(attr))
            syscall, get_errno = libc.syscall, ctypes.get_errno
            c_nr, c_zero = ctypes.c_long(nr), ctypes.c_long(0)
        except (ImportError, OSError, AttributeError) as exc:
            msg = f"SCHED_DEADLINE unavailable ({exc}); running best effort (SCHED_OTHER)"
            return lambda: msg

        def apply_deadline() -> str | None:
            if syscall(c_nr, c_zero, buf, c_zero) != 0:
                return _explain(get_errno(), "SCHED_DEADLINE")
            return None

        return apply_deadline
    return lambda: None
