"""Kills an agent's leftover job processes once the agent is gone, however it ended.

Jobs used to get ``PR_SET_PDEATHSIG = SIGKILL`` from a ``preexec_fn``; a
preexec_fn makes subprocess fork (copying the agent's page tables) and run
Python in the child instead of vfork + exec, ~10 ms of guest CPU per job
under TCG. Instead, every job's environment carries ``GUARD_ENV=<random
marker>`` and one guard per agent, a ``/bin/sh`` started with the first job,
blocks reading a pipe only the agent holds the write end of. End of file on it
(the agent exited, was killed or crashed) makes the guard SIGKILL every
process whose environment holds the marker: job leaders, as pdeathsig did,
and also their descendants that kept the environment (pdeathsig never reached
those). A job that empties its environment escapes; one whose leader still
runs under a preexec_fn (scheduling policy, CPU budget, memory quota) keeps
pdeathsig too. The guard runs in its own process group, so signals sent to the
agent's group do not end it first, and it is no child of the agent (a
launcher shell starts it in the background and exits), so it outlives the
agent by one sweep.
"""

from __future__ import annotations

import os
import subprocess
import threading

from farm.agent import logs

log = logs.get_logger(__name__)

GUARD_ENV = "FARM_JOB_GUARD"
SHELL = "/bin/sh"
LAUNCH_TIMEOUT = 10.0

#: $1 = GUARD_ENV=marker. ``read`` returns at end of file only (nobody writes); then kill
#: what carries the marker, again while a pass found something (a job forking meanwhile).
#: grep -z reads /proc/PID/environ as NUL-separated entries (GNU grep and busybox alike).
SCRIPT = """while read -r _; do :; done
n=0
while [ $n -lt 3 ]; do
    found=
    for e in $(grep -lsxzF "$1" /proc/[0-9]*/environ); do
        p=${e#/proc/}
        kill -9 "${p%/environ}" 2>/dev/null && found=1
    done
    [ -n "$found" ] || break
    n=$((n + 1))
done
"""

#: starts the guard in the background and exits: the guard is no child of the agent (an
#: agent's children are its jobs), and its stdin stays the pipe (via fd 3: an
#: asynchronous list of a non-interactive shell gets /dev/null as stdin first)
LAUNCH = 'exec 3<&0; "$0" -c "$1" farm-job-guard "$2" <&3 3<&- >/dev/null 2>&1 &'

_lock = threading.Lock()
_write_fd = -1
_entry: tuple[str, str] | None = None


def entry() -> tuple[str, str] | None:
    """The environment entry that puts a job under the guard (started on first use).

    None if the guard cannot be started (no ``/bin/sh``...): the caller then
    falls back to pdeathsig.
    """
    global _write_fd, _entry
    with _lock:
        if _entry is not None:
            return _entry
        marker = f"{GUARD_ENV}={os.getpid()}.{os.urandom(8).hex()}"
        read_fd, write_fd = os.pipe()  # both close-on-exec: no job inherits the write end
        try:
            launcher = subprocess.Popen(
                [SHELL, "-c", LAUNCH, SHELL, SCRIPT, marker],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH") or "/usr/bin:/bin:/usr/sbin:/sbin"},
                close_fds=True,
                process_group=0,
            )
            code = launcher.wait(LAUNCH_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(write_fd)
            log.warning("cannot start the job guard (%s); jobs get pdeathsig instead", exc)
            return None
        finally:
            os.close(read_fd)
        if code != 0:
            os.close(write_fd)
            log.warning("the job guard's launcher failed (%s); jobs get pdeathsig instead", code)
            return None
        _write_fd = write_fd
        _entry = tuple(marker.split("=", 1))  # type: ignore[assignment]
        return _entry


def stop() -> None:
    """Close the pipe: the guard sweeps (nothing is left after an orderly stop) and exits.

    Jobs started afterwards get a new guard. (The agent's exit closes the pipe
    just the same.)
    """
    global _write_fd, _entry
    with _lock:
        if _write_fd >= 0:
            os.close(_write_fd)
        _write_fd, _entry = -1, None
