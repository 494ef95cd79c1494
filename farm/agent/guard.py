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

A task set and an exec run are a :class:`Group`: their processes carry a
second marker, ``SET_ENV=<random>``, and, where the agent can write a cgroup v2
hierarchy (root in the guest, whose /init mounts cgroup2; root on a host with
a cgroup2 mount), the group has its own cgroup under ``farm-<agent pid>``. A
task set has the agent itself in it for the set's life, so every job is born
inside (nothing per job, and no window in which a leader could fork before
being moved). At the set's end, when nothing but the agent is left in the
cgroup (``cgroup.procs``: every job reaped), the next set takes it as it is;
otherwise the agent moves on into a fresh cgroup, which the next set takes,
and the old one is killed. Either way no cgroup work is on the path of a
start, and the common case does none at all (a cgroup move of the agent, a
many-threaded process, is among the costliest syscalls of a set). An exec
run's shell moves itself in before it runs the command. :meth:`Group.close`
at the set's stop or end (the run's end) kills the lot with ``cgroup.kill``,
a setsid'ed or double-forked grandchild included, or, without a usable cgroup
(``FARM_JOB_CGROUP=0`` forces this), by a sweep of ``/proc/*/environ`` for
the group's marker. When the agent goes,
the guard also writes ``cgroup.kill`` of the agent's whole ``farm-<pid>``
subtree and removes it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time

from farm.agent import logs
from farm.agent.sweep import EMPTY_WAIT, sweep

log = logs.get_logger(__name__)

GUARD_ENV = "FARM_JOB_GUARD"
SET_ENV = "FARM_JOB_SET"
CGROUP_ENV = "FARM_JOB_CGROUP"
#: an exec run's shell: ``$1`` = its group's cgroup.procs, ``$2`` = the command; it moves
#: itself in before anything else (``set --``: the command sees no positional parameter)
ENTER = 'echo $$ >"$1" || exit 126; shift; eval "set --; $1"'
SHELL = "/bin/sh"
LAUNCH_TIMEOUT = 10.0

#: $1 = GUARD_ENV=marker. ``read`` returns at end of file only (nobody writes); then kill
#: what carries the marker, again while a pass found something (a job forking meanwhile).
#: grep -z reads /proc/PID/environ as NUL-separated entries (GNU grep and busybox alike).
SCRIPT = """while read -r _; do :; done
[ -z "$2" ] || echo 1 > "$2/cgroup.kill" 2>/dev/null
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
# the cgroups go once empty: the killed (the agent too) may wait a while for their reaping
n=0
while [ -n "$2" ] && [ -d "$2" ] && [ $n -lt 10 ]; do
    sleep 1
    rmdir "$2"/* "$2" 2>/dev/null
    n=$((n + 1))
done
"""

#: starts the guard in the background and exits: the guard is no child of the agent (an
#: agent's children are its jobs), and its stdin stays the pipe (via fd 3: an
#: asynchronous list of a non-interactive shell gets /dev/null as stdin first)
LAUNCH = 'exec 3<&0; "$0" -c "$1" farm-job-guard "$2" "$3" <&3 3<&- >/dev/null 2>&1 &'

_lock = threading.Lock()
_write_fd = -1
_entry: tuple[str, str] | None = None
_cgroup_root: str | None = None
_cgroup_probed = False
_home: str | None = None  # the agent's own cgroup
_move_lock = threading.Lock()
_entered: Group | None = None  # the set whose cgroup the agent is in
_parked: str | None = None  # a fresh cgroup the agent waits in for the next set


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
            code = _launch(
                [SHELL, "-c", LAUNCH, SHELL, SCRIPT, marker, _root_path()[1]],
                {"PATH": os.environ.get("PATH") or "/usr/bin:/bin:/usr/sbin:/sbin"},
                read_fd,
            )
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


def _launch(argv: list[str], env: dict[str, str], stdin: int) -> int:
    """Run the guard's launcher in its own process group; its exit code.

    glibc's posix_spawn (vfork semantics) where it is available: subprocess
    forks the whole agent, ~0.13 s of a fresh TCG guest's first set.
    """
    from farm.agent import pspawn, sched

    if not pspawn.available():
        launcher = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
            process_group=0,
        )
        return launcher.wait(LAUNCH_TIMEOUT)
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        pid, _ = pspawn.spawn(argv, env, "/", null, sched.SchedPlan(), in_fd=stdin)
    finally:
        os.close(null)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise subprocess.TimeoutExpired(argv, LAUNCH_TIMEOUT)
        time.sleep(0.001)


def stop() -> None:
    """Close the pipe: the guard sweeps (nothing is left after an orderly stop) and exits.

    Jobs started afterwards get a new guard. (The agent's exit closes the pipe
    just the same.)
    """
    global _write_fd, _entry, _entered, _parked, _cgroup_probed, _cgroup_root
    with _move_lock:  # the guard kills the agent's cgroups: the agent leaves them first
        if (_entered is not None or _parked is not None) and _home is not None:
            _move(os.getpid(), _home)
        _entered = _parked = None
    with _lock:
        if _write_fd >= 0:
            os.close(_write_fd)
        _write_fd, _entry = -1, None
        _cgroup_probed, _cgroup_root = False, None  # the guard removes them: made anew


def cgroup_root() -> str | None:
    """This agent's cgroup v2 directory ``farm-<pid>`` (made on first use), None if unusable.

    Under the agent's own cgroup, on the first cgroup2 mount; None when there is
    none, the kernel lacks ``cgroup.kill`` (5.14+), the agent may not write it, or
    the environment says ``FARM_JOB_CGROUP=0`` (sweeps only).
    """
    global _cgroup_root, _cgroup_probed, _home
    if _cgroup_probed:
        return _cgroup_root
    _cgroup_probed = True
    home, root = _root_path()
    if not root:
        return None
    try:
        os.makedirs(root, exist_ok=True)
        # a set moves the agent in and out: try that once (it needs write access to home)
        usable = os.access(os.path.join(root, "cgroup.kill"), os.W_OK) and _move(os.getpid(), root)
        if not (usable and _move(os.getpid(), home)):
            _move(os.getpid(), home)
            os.rmdir(root)
            return None
    except (OSError, ValueError) as exc:
        log.debug("no cgroup for job groups (%s): sweeps by marker instead", exc)
        return None
    _cgroup_root, _home = root, home
    atexit.register(_remove_root, root, home)
    return root


def _root_path() -> tuple[str, str]:
    """(the agent's own cgroup, its ``farm-<pid>`` below) as paths; ("", "") if none.

    Nothing is made: the guard is told this path at its start, and the directory
    exists only once a group needed it.
    """
    if os.environ.get(CGROUP_ENV) == "0":
        return "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            mount = next((f[1] for f in map(str.split, mounts) if f[2:3] == ["cgroup2"]), None)
        with open("/proc/self/cgroup", encoding="utf-8") as own:
            path = next((line[3:].strip() for line in own if line.startswith("0::")), None)
    except OSError:
        return "", ""
    if mount is None or path is None:
        return "", ""
    home = os.path.join(mount, path.lstrip("/"))
    return home, os.path.join(home, f"farm-{os.getpid()}")


def _remove_root(root: str, home: str) -> None:
    """At an orderly exit: kill what is left in the agent's cgroups and remove them.

    (The guard does the same after any exit; this is at once, and the guard may
    be killed with the agent's process tree by whoever stops it.)
    """
    with _move_lock:
        _move(os.getpid(), home)
        _write(os.path.join(root, "cgroup.kill"), 1)
        with contextlib.suppress(OSError):
            for child in os.scandir(root):
                if child.is_dir():
                    _remove(child.path)
        _remove(root)


class Group:
    """The processes of one task set or exec run: marked, in their own cgroup if possible.

    ``env`` goes into each process's environment. ``enter=True`` (a task set)
    moves the agent itself into the cgroup until :meth:`close`, so every job is
    born there (no window in which a job could fork outside it); the agent's
    other children (the guard, exec runs) start before or move out at once.
    Otherwise (an exec run) the process moves itself in first: see :data:`ENTER`
    and :attr:`procs`. :meth:`close` (idempotent) kills whatever is left.
    """

    def __init__(self, name: str, enter: bool = False) -> None:
        self.name = name
        self.marker = f"{os.getpid()}.{name}.{os.urandom(6).hex()}"
        self.env = {SET_ENV: self.marker}
        self.cgroup: str | None = None
        self._home: str | None = None  # where the agent returns to (enter=True)
        self._lock = threading.Lock()
        self._closed = False
        self._handed = False  # its cgroup, emptied, went on to the next set as it is
        # the guard first: it removes the agent's cgroups at its exit, and must not be born
        # in (and killed with) a set's cgroup
        entry()
        root = cgroup_root()
        if root is None:
            return
        global _entered, _parked
        if enter:
            with _move_lock:  # the last set's end parked the agent in a cgroup: take it
                parked, _parked = _parked, None
                if parked is None and _entered is not None and _entered._hand_over():
                    parked = _entered.cgroup  # the last set is over (its close still to come)
                if parked is not None:
                    self.cgroup, self._home, _entered = parked, _home, self
                    return
        path = os.path.join(root, f"{name}-{os.urandom(4).hex()}")
        try:
            os.mkdir(path)
        except OSError as exc:
            log.debug("no cgroup for %s (%s): a sweep by marker ends it", name, exc)
            return
        self.cgroup = path
        if enter:
            with _move_lock:
                if _write(os.path.join(path, "cgroup.procs"), os.getpid()):
                    self._home, _entered = _home, self
                else:
                    self.cgroup = None
                    _remove(path)

    @property
    def procs(self) -> str | None:
        """The cgroup's ``cgroup.procs`` (for :data:`ENTER`), None without a cgroup."""
        return None if self.cgroup is None else os.path.join(self.cgroup, "cgroup.procs")

    def close(self) -> None:
        """Kill every process of the group, however it detached (setsid, double fork)."""
        with self._lock:  # held throughout: a second caller returns once all is gone
            if self._closed:
                return
            self._closed = True
            cgroup = self.cgroup
            if self._home is not None:
                left = self._leave(self._home)
                if self._handed:
                    return  # nothing but the agent was left in it: the next set has it
                if not left:
                    log.error("%s: the agent cannot leave its cgroup: sweeping instead", self.name)
                    cgroup = None
            if cgroup is not None and self._kill_cgroup(cgroup):
                return
            killed = sweep(SET_ENV, self.marker)
            if killed:
                log.info("%s: killed %d leftover process(es)", self.name, killed)

    def _hand_over(self) -> bool:
        """True (and it is no longer this group's) if only the agent is left in the cgroup.

        Under ``_move_lock``, by the agent's start of the next set (this set's
        runner has finished: every job reaped) or this group's close. A process
        still in it (a setsid'ed grandchild, a job not reaped) keeps it: the
        close then kills the cgroup as before. The agent stays where it is: no
        cgroup is made, moved into, killed or removed on the way to the next set.
        """
        if self._handed:
            return True
        if self.cgroup is None:
            return False
        try:
            fd = os.open(os.path.join(self.cgroup, "cgroup.procs"), os.O_RDONLY | os.O_CLOEXEC)
            try:
                procs = os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError:
            return False
        if procs.split() != [str(os.getpid()).encode()]:
            return False
        self._handed = True
        return True

    def _leave(self, home: str) -> bool:
        """Move the agent out unless the next set already took it into its own cgroup.

        Into a fresh cgroup that the next set then takes as it is (its start does
        no cgroup work at all); home if that cannot be made.
        """
        global _entered, _parked
        with _move_lock:
            if self._handed or _entered is not self:
                return True
            _entered = None
            if self._hand_over():
                _parked = self.cgroup
                return True
            assert self.cgroup is not None
            fresh = os.path.join(os.path.dirname(self.cgroup), f"set-{os.urandom(4).hex()}")
            try:
                os.mkdir(fresh)
            except OSError:
                return _write(os.path.join(home, "cgroup.procs"), os.getpid())
            if _write(os.path.join(fresh, "cgroup.procs"), os.getpid()):
                _parked = fresh
                return True
            _remove(fresh)
            return _write(os.path.join(home, "cgroup.procs"), os.getpid())

    def _kill_cgroup(self, cgroup: str) -> bool:
        """cgroup.kill, then remove the cgroup once empty; False if it cannot be used."""
        if not _write(os.path.join(cgroup, "cgroup.kill"), 1):
            log.warning("%s: cgroup.kill failed: sweeping by marker", self.name)
            return False
        deadline = time.monotonic() + EMPTY_WAIT
        while not _remove(cgroup):
            if time.monotonic() > deadline:
                log.warning("%s: cgroup %s not empty after its kill", self.name, cgroup)
                break
            time.sleep(0.005)
        return True


def _move(pid: int, cgroup: str) -> bool:
    return _write(os.path.join(cgroup, "cgroup.procs"), pid)


def _write(path: str, value: int) -> bool:
    """Write a number to a cgroup file (plain syscalls: this is on every set's path)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as exc:
        log.debug("cannot write %s to %s: %s", value, path, exc)
        return False
    return True


def _remove(cgroup: str) -> bool:
    try:
        os.rmdir(cgroup)
    except OSError:
        return False
    return True
