"""What subprocess's ``preexec_fn`` sets in a job's child between fork and exec.

For the jobs glibc's posix_spawn cannot start (:mod:`farm.agent.pspawn`): a CPU
budget (ITIMER_PROF + RLIMIT_CPU), an address-space limit, SCHED_DEADLINE, and
PR_SET_PDEATHSIG when no guard runs (see :mod:`farm.agent.jobs`). Everything
that allocates or may fail is prepared in the parent.
"""

from __future__ import annotations

import math
import os
import resource
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from farm.agent import sched

if TYPE_CHECKING:
    from farm.agent.jobs import Launch

PR_SET_PDEATHSIG = 1


def factory(launch: Launch, pdeathsig: bool) -> Callable[[int], Callable[[], None]] | None:
    """Factory of the preexec_fn for what must be set in the child, or None if nothing.

    Scheduling policy, CPU budget (ITIMER_PROF is per process and survives
    exec only when set by the process itself) and address-space limit are
    in force before the job's first instruction, as before. Without them
    and with the guard running the job needs no preexec_fn at all.
    """
    budget = launch.budget_s
    cpu_limit = math.ceil(budget) + 1 if budget > 0 else 0
    as_limit = launch.quota if launch.quota > 0 and not launch.builtin else 0
    plan = launch.sched
    if plan.policy == "other" and not cpu_limit and not as_limit and not pdeathsig:
        return None
    apply_plan = sched.child_applier(plan)
    # the guard does not cover a job whose leader clears its environment: keep
    # pdeathsig on this path anyway, it costs nothing more here
    set_pdeathsig = pdeathsig_setter()

    def make(status_w: int) -> Callable[[], None]:
        def child_setup() -> None:  # runs in the child between fork and exec
            try:
                if set_pdeathsig is not None:
                    set_pdeathsig()
                if as_limit:
                    resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
                if cpu_limit:
                    resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 1))
                    signal.setitimer(signal.ITIMER_PROF, budget)
                problem = apply_plan()
                if problem:
                    os.write(status_w, problem.encode()[:4000])
            except BaseException as exc:  # never raise here: report instead
                try:
                    os.write(status_w, f"job setup failed: {exc!r}".encode()[:4000])
                except OSError:
                    pass

        return child_setup

    return make


def pdeathsig_setter() -> Callable[[], None] | None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL) prepared in the parent, or None without ctypes."""
    try:
        libc = sched.load_libc()
        prctl = libc.prctl
    except (ImportError, OSError, AttributeError):
        return None
    import ctypes

    opt, sig = ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL)

    def setter() -> None:
        prctl(opt, sig)

    return setter
