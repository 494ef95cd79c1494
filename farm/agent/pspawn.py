"""posix_spawn(3) through ctypes: a job started by the C library with everything set in the child.

``subprocess`` can only set a scheduling policy from a ``preexec_fn`` (fork,
then Python in the child: ~10 ms of guest CPU under TCG), and ``os.posix_spawn``
of Python 3.11 cannot set the working directory. glibc's posix_spawn (a
vfork-like clone) does it all before the exec: SCHED_FIFO (or SCHED_OTHER) with
its priority, a new process group, default SIGPIPE/SIGXFSZ, an empty signal
mask, stdin from /dev/null, stdout and stderr to the job's pipe, the working
directory (``addchdir_np``, glibc 2.29) and no inherited descriptor above 2
(``addclosefrom_np``, glibc 2.34). So the policy is in force before the job's
first instruction, and the calling thread may run above every job (it is not
the job's parent thread in any way that matters).

The call keeps the GIL (``ctypes.PyDLL``): no other agent thread can take it in
the meantime and then be preempted by the new real-time job while holding it.
A pre-spawned job (``in_fd``, its gate) blocks on its gate right after its exec,
so its spawn lets the GIL go (``ctypes.CDLL``): until the exec the child runs
under the job's policy and may wait behind a running job of higher or equal
priority, and the agent's other threads must not wait with it.
When the kernel refuses the policy the job is spawned again without it and the
refusal is returned for the NOTICE. :func:`available` is False without ctypes or
these glibc functions; the caller then uses subprocess.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Any

from farm.agent import sched

SETPGROUP, SETSIGDEF, SETSIGMASK, SETSCHEDPARAM, SETSCHEDULER = 0x02, 0x04, 0x08, 0x10, 0x20
_ATTR_SIZE = 1024  # >= sizeof(posix_spawnattr_t) (336 on x86-64 glibc)
_ACTIONS_SIZE = 1024  # >= sizeof(posix_spawn_file_actions_t) (80)
_SIGSET_SIZE = 128  # sizeof(sigset_t) in glibc
_NEEDED = (
    "posix_spawn",
    "posix_spawnattr_init",
    "posix_spawnattr_destroy",
    "posix_spawnattr_setflags",
    "posix_spawnattr_setpgroup",
    "posix_spawnattr_setsigdefault",
    "posix_spawnattr_setsigmask",
    "posix_spawnattr_setschedpolicy",
    "posix_spawnattr_setschedparam",
    "posix_spawn_file_actions_init",
    "posix_spawn_file_actions_destroy",
    "posix_spawn_file_actions_addopen",
    "posix_spawn_file_actions_adddup2",
    "posix_spawn_file_actions_addchdir_np",
    "posix_spawn_file_actions_addclosefrom_np",
)

_lib: Any = None
_nogil: Any = None  # posix_spawn through ctypes.CDLL: the GIL is released during the call
_tried = False


def _load() -> Any:
    """glibc through ctypes.PyDLL (calls keep the GIL), or None if something is missing."""
    global _lib, _nogil, _tried
    if not _tried:
        _tried = True
        try:
            import ctypes

            lib = ctypes.PyDLL(None, use_errno=True)
            if all(hasattr(lib, name) for name in _NEEDED):
                _nogil = ctypes.CDLL(None, use_errno=True).posix_spawn
                _lib = lib
        except (ImportError, OSError):
            _lib = None
    return _lib


def available() -> bool:
    """True if jobs can be started with :func:`spawn` here."""
    return _load() is not None


def resolve(program: str, env: dict[str, str]) -> str:
    """``program`` itself if it holds a slash, else its first executable match on env's PATH."""
    if "/" in program:
        return program
    for directory in os.get_exec_path(env):
        path = os.path.join(directory, program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _sigset(signals: tuple[int, ...]) -> bytes:
    bits = bytearray(_SIGSET_SIZE)
    for sig in signals:
        bits[(sig - 1) // 8] |= 1 << ((sig - 1) % 8)
    return bytes(bits)


def spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    out_fd: int,
    plan: sched.SchedPlan,
    in_fd: int = -1,
) -> tuple[int, str | None]:
    """Start ``argv``; (pid, NOTICE text if the policy was refused). Raises OSError.

    ``plan`` must be SCHED_OTHER or SCHED_FIFO (SCHED_DEADLINE is no posix_spawn policy).
    stdin is ``in_fd`` (a pre-spawned job's gate), else /dev/null.
    """
    import ctypes

    lib = _load()
    if lib is None:
        raise OSError(errno.ENOSYS, "posix_spawn with addchdir_np is not available")
    if plan.policy not in ("other", "fifo"):
        raise ValueError(f"posix_spawn cannot apply {plan.policy}")
    path = os.fsencode(resolve(argv[0], env))
    c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[os.fsencode(a) for a in argv], None)
    entries = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    c_env = (ctypes.c_char_p * (len(entries) + 1))(*entries, None)
    actions = ctypes.create_string_buffer(_ACTIONS_SIZE)
    lib.posix_spawn_file_actions_init(actions)
    try:
        if in_fd >= 0:
            lib.posix_spawn_file_actions_adddup2(actions, in_fd, 0)
        else:
            lib.posix_spawn_file_actions_addopen(actions, 0, b"/dev/null", os.O_RDONLY, 0)
        lib.posix_spawn_file_actions_adddup2(actions, out_fd, 1)
        lib.posix_spawn_file_actions_adddup2(actions, out_fd, 2)
        lib.posix_spawn_file_actions_addchdir_np(actions, os.fsencode(cwd))
        lib.posix_spawn_file_actions_addclosefrom_np(actions, 3)
        call = _nogil if in_fd >= 0 else lib.posix_spawn
        first = _attempt(lib, call, path, actions, c_argv, c_env, plan)
        if first[0] > 0 or plan.policy == "other":
            return _checked(first, argv[0]), None
        pid, err = _attempt(lib, call, path, actions, c_argv, c_env, sched.SchedPlan())
        problem = sched._explain(first[1], f"SCHED_FIFO {plan.priority}")
        return _checked((pid, err), argv[0]), problem
    finally:
        lib.posix_spawn_file_actions_destroy(actions)


def _checked(result: tuple[int, int], program: str) -> int:
    pid, err = result
    if pid <= 0:
        raise OSError(err, os.strerror(err), program)
    return pid


def _attempt(
    lib: Any,
    call: Any,
    path: bytes,
    actions: Any,
    c_argv: Any,
    c_env: Any,
    plan: sched.SchedPlan,
) -> tuple[int, int]:
    """One posix_spawn: (pid, 0) or (0, errno)."""
    import ctypes

    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    lib.posix_spawnattr_init(attr)
    try:
        flags = SETPGROUP | SETSIGDEF | SETSIGMASK
        lib.posix_spawnattr_setpgroup(attr, 0)
        default = _sigset((signal.SIGPIPE, signal.SIGXFSZ))
        lib.posix_spawnattr_setsigdefault(attr, ctypes.c_char_p(default))
        lib.posix_spawnattr_setsigmask(attr, ctypes.c_char_p(_sigset(())))
        if plan.policy == "fifo":
            flags |= SETSCHEDULER | SETSCHEDPARAM
            lib.posix_spawnattr_setschedpolicy(attr, os.SCHED_FIFO)
            lib.posix_spawnattr_setschedparam(attr, ctypes.byref(ctypes.c_int(plan.priority)))
        lib.posix_spawnattr_setflags(attr, ctypes.c_short(flags))
        pid = ctypes.c_int(0)
        err = call(ctypes.byref(pid), path, actions, attr, c_argv, c_env)
        return (pid.value, 0) if err == 0 else (0, err)
    finally:
        lib.posix_spawnattr_destroy(attr)
