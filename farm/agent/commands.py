"""What a task's job executes: built-in workload, shell command or uploaded binary.

* built-in pkg (``pkgs.BUILTIN_PKGS``): ``farm-workload PKG CONFIG QUOTA``, the native
  program of farm/agent/native/*.c (CONFIG in the compact ``key=value,...``
  form), found at ``$FARM_WORKLOAD_BIN`` or else :data:`NATIVE_DEFAULT` (where a farm
  image holds it) if it is executable and built for this machine; otherwise the Python
  fallback ``python -S -s -P workloads.py PKG CONFIG QUOTA`` (same configs, output and
  exit statuses, but ~100+ ms of interpreter start-up per job under TCG), announced by
  one NOTICE per set (:func:`fallback_notice`).
* ``shell``: ``/bin/sh -c config["command"]``; ``config["output_limit"]``
  (bytes, default 64 KiB, at most 16 MiB) sets how much output tail is kept.
* traffic pkg (``pkgs.TRAFFIC_PKGS``): ``python -S -s -P -m farm.agent.traffic ROLE
  --key=value ...`` (see docs/traffic.md); its JSON stats lines become events
  (``Launch.stats``) and a stop sends SIGTERM first (``Launch.term_grace``) so
  it can print its final statistics.
* ``cyclictest`` (``pkgs.PROGRAM_PKGS``): Debian's cyclictest with flags from the
  config (:mod:`farm.agent.cyclictest`); its summary becomes the exit event's
  ``latency_us`` (``Launch.summary``). Where farm-workload knows ``--exec``
  (:func:`exec_gate`) job 0 is pre-spawned before the set starts as
  ``farm-workload --exec cyclictest ...`` and exec'd at its release; later jobs
  are spawned at their release (a pre-spawn would run during the previous
  job's measurement).
* an uploaded binary: executed directly. Its arguments are
  ``config["args"]`` (a list) if present, else the config's values in key
  order; strings are passed as they are, other scalars as JSON
  (``42``, ``1.5``, ``true``).

Every job gets the agent's environment minus ``FARM_TOKEN``, plus
``FARM_TASK_ID``, ``FARM_JOB`` (0-based), ``FARM_PKG`` and ``FARM_CONFIG``
(the config as JSON), and the directory holding the ``farm`` package first on
``PYTHONPATH`` (so ``python3 -m farm.agent.traffic`` works in shell jobs, also in
a guest). Jobs run in the agent's private work directory.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from farm.agent import jobs, pkgs, sched, workloads
from farm.agent.taskspec import TaskSpec

WORKLOADS_SCRIPT = str(Path(workloads.__file__).resolve())
#: the directory that holds the ``farm`` package
AGENT_ROOT = str(Path(pkgs.__file__).resolve().parents[2])
MAX_OUTPUT_LIMIT = 16 * 1024 * 1024
#: seconds a traffic job gets after SIGTERM to print its final statistics
TRAFFIC_TERM_GRACE = 3.0
#: where a farm-built guest image holds the native workloads (farm/image/native.py)
NATIVE_DEFAULT = "/opt/farm/bin/farm-workload"
#: environment variable naming the native workloads program elsewhere (local backend, hosts
#: not built by farm); it takes precedence over NATIVE_DEFAULT
NATIVE_ENV = "FARM_WORKLOAD_BIN"
#: ``os.uname().machine`` -> ELF ``e_machine``
_ELF_MACHINES = {
    "x86_64": 62,
    "i386": 3,
    "i686": 3,
    "aarch64": 183,
    "armv7l": 40,
    "riscv64": 243,
    "ppc64le": 21,
    "s390x": 22,
}


def elf_mismatch(header: bytes) -> str | None:
    """Why an ELF header does not fit this machine (class, byte order, e_machine), or None."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return "not an ELF executable"
    if header[4] != (2 if sys.maxsize > 2**32 else 1):
        return f"{32 * header[4]}-bit ELF on a {64 if sys.maxsize > 2**32 else 32}-bit system"
    order = "little" if header[5] == 1 else "big"
    if order != sys.byteorder:
        return f"{order}-endian ELF on a {sys.byteorder}-endian system"
    machine = int.from_bytes(header[18:20], order)
    wanted = _ELF_MACHINES.get(os.uname().machine)
    if wanted is not None and machine != wanted:
        return f"ELF machine {machine}, this is {os.uname().machine} ({wanted})"
    return None


@functools.lru_cache(maxsize=1)
def native_workload() -> tuple[str | None, str]:
    """(path of a usable native workloads program or None, where it was looked for / why not).

    Looked up once per agent process (``native_workload.cache_clear()`` forgets it).
    """
    path = os.environ.get(NATIVE_ENV) or NATIVE_DEFAULT
    where = f"${NATIVE_ENV}={path}" if os.environ.get(NATIVE_ENV) else path
    try:
        with open(path, "rb") as fh:
            header = fh.read(64)
    except OSError as exc:
        return None, f"{where}: {exc.strerror or exc}"
    if not os.access(path, os.X_OK):
        return None, f"{where}: not executable"
    why = elf_mismatch(header)
    if why:
        return None, f"{where}: {why}"
    return path, where


#: what a native program that can wait for its release contains (farm/agent/native/workloads.c)
GATE_MARKER = b"FARM_GATE"
#: ... and one that can hold another program at that gate (``farm-workload --exec``)
EXEC_GATE_MARKER = b"FARM_EXEC_GATE"


def native_gate() -> bool:
    """True if the native workloads program can hold a pre-spawned job until its release.

    It waits for its release byte when it knows FARM_GATE (an older build would
    run the job at once): see :mod:`farm.agent.spawner`. Other programs (shell,
    uploads) are spawned at their release: a failed exec of theirs stays a
    NOT_SCHEDULED of that release; a cyclictest job 0 waits at the gate of
    :func:`exec_gate` when the program has one.
    """
    return _native_knowing(GATE_MARKER) is not None


def exec_gate() -> str | None:
    """The native program that can hold another one at its gate (``--exec``), or None.

    A pre-spawned ``farm-workload --exec PROGRAM ...`` waits for its release byte,
    then execs PROGRAM: the cyclictest pkg's jobs are ready at their release too.
    """
    return _native_knowing(EXEC_GATE_MARKER)


def _native_knowing(marker: bytes) -> str | None:
    """The native workloads program if its build contains ``marker``, else None."""
    path, _ = native_workload()
    try:
        if path is not None and _knows(path, os.stat(path).st_mtime_ns, marker):
            return path
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=8)
def _knows(path: str, mtime_ns: int, marker: bytes) -> bool:
    with open(path, "rb") as fh:
        return marker in fh.read()


def fallback_notice(pkgs_used: Iterable[str]) -> str | None:
    """NOTICE text when built-ins among ``pkgs_used`` run as Python, else None."""
    builtins = sorted(set(pkgs_used) & pkgs.BUILTIN_PKGS)
    if not builtins:
        return None
    path, why = native_workload()
    if path is not None:
        return None
    return (
        f"built-in workloads ({', '.join(builtins)}) run as Python (farm/agent/workloads.py): "
        f"no native farm-workload ({why}); each job pays the interpreter's start-up"
    )


def _arg(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def binary_args(config: dict[str, object]) -> list[str]:
    """Command-line arguments of an uploaded binary for ``config``."""
    explicit = config.get("args")
    if isinstance(explicit, list):
        return [_arg(v) for v in explicit]
    return [_arg(v) for v in config.values()]


def job_env(task: TaskSpec, index: int) -> dict[str, str]:
    """Environment of a job (the token never leaks to jobs)."""
    env = {k: v for k, v in os.environ.items() if k != "FARM_TOKEN"}
    env.update(
        FARM_TASK_ID=str(task.id),
        FARM_JOB=str(index),
        FARM_PKG=task.pkg,
        FARM_CONFIG=json.dumps(task.config),
    )
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = AGENT_ROOT + (os.pathsep + path if path else "")
    return env


def build_launch(
    task: TaskSpec, index: int, plan: sched.SchedPlan, binaries: dict[str, Path], workdir: Path
) -> jobs.Launch:
    """The Launch for job ``index`` of ``task``."""
    tail = jobs.OUTPUT_TAIL
    builtin = traffic = gate = False
    summary = ""
    if task.pkg in binaries:
        argv = [str(binaries[task.pkg]), *binary_args(task.config)]
    elif task.pkg == pkgs.SHELL_PKG:
        argv = ["/bin/sh", "-c", str(task.config["command"])]
        limit = task.config.get("output_limit")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            tail = min(limit, MAX_OUTPUT_LIMIT)
    elif task.pkg in pkgs.BUILTIN_PKGS:
        config = workloads.encode_config(task.pkg, task.config)
        native, _ = native_workload()
        if native is not None:
            argv = [native, task.pkg, config]
            gate = native_gate()
        else:
            python = sys.executable or "python3"
            # -S -s: no site (fast start-up); -P: not the script's directory on sys.path
            # (farm/agent/sched.py would shadow the stdlib's sched). Not -I: that
            # implies -E, and a guest runtime may need PYTHONHOME.
            argv = [python, "-S", "-s", "-P", WORKLOADS_SCRIPT, task.pkg, config]
        argv.append(str(task.quota))
        builtin = True
    elif task.pkg in pkgs.TRAFFIC_PKGS:
        from farm.agent.traffic import config as traffic_config

        python = sys.executable or "python3"
        argv = [python, "-S", "-s", "-P", "-m", "farm.agent.traffic"]
        argv += traffic_config.config_argv(task.pkg, task.config)
        traffic = True
    elif task.pkg in pkgs.PROGRAM_PKGS:
        from farm.agent import cyclictest

        argv = cyclictest.argv(task.config)
        summary = task.pkg
        holder = exec_gate() if index == 0 else None
        if holder is not None:  # job 0: pre-spawned before the set's t0, exec'd at its release
            argv = [holder, "--exec", *argv]
            gate = True
        # later jobs are spawned at their release: a pre-spawn is made while the previous
        # job runs (at the launcher's top priority), which would disturb what it measures
    else:
        raise ValueError(f"no way to run pkg {task.pkg!r}")
    return jobs.Launch(
        argv=argv,
        env=job_env(task, index),
        cwd=str(workdir),
        builtin=builtin,
        budget_s=task.executiontime / 1000.0,
        quota=task.quota,
        sched=plan,
        output_tail=tail,
        stats=traffic,
        term_grace=TRAFFIC_TERM_GRACE if traffic else 0.0,
        summary=summary,
        gate=gate,
    )
