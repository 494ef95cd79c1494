"""posix_spawn through ctypes (farm/agent/pspawn.py): what the child gets before its exec."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from farm.agent import pspawn, sched

pytestmark = pytest.mark.unit

ENV = {"PATH": "/usr/bin:/bin", "FARM_X": "a b=c"}


def run(tmp_path: Path, script: str, plan: sched.SchedPlan) -> tuple[str, int, str | None]:
    """Spawn ``sh -c script``; (its output, its pid, the policy problem)."""
    read, write = os.pipe()
    try:
        pid, problem = pspawn.spawn(["sh", "-c", script], ENV, str(tmp_path), write, plan)
    finally:
        os.close(write)
    _, status = os.waitpid(pid, 0)
    out = b""
    while chunk := os.read(read, 65536):
        out += chunk
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out.decode(), pid, problem


def test_the_child_gets_cwd_group_env_stdio_and_no_other_descriptors(tmp_path: Path) -> None:
    assert pspawn.available()
    null = os.open("/dev/null", os.O_RDONLY)
    leak = os.dup2(null, 77, inheritable=True)  # closefrom(3) must close even an inheritable one
    os.close(null)
    try:
        script = (
            'pwd; echo "$FARM_X"; for f in /proc/$$/fd/*; do printf "%s " "${f##*/}"; done; echo; '
            "cut -d' ' -f5 /proc/$$/stat; readlink /proc/$$/fd/0; "
            # the shell's own mask, read by builtins: while it runs a command (grep) dash
            # vforks with every signal blocked, so grep would see that window's mask
            'while read -r k v; do [ "$k" = SigBlk: ] && echo "$k $v"; done < /proc/$$/status; '
            "echo err >&2"
        )
        out, pid, problem = run(tmp_path, script, sched.SchedPlan())
    finally:
        os.close(leak)
    lines = out.splitlines()
    assert problem is None
    assert lines[0] == str(tmp_path)
    assert lines[1] == "a b=c"
    fds = lines[2].split()
    assert fds[:3] == ["0", "1", "2"] and str(leak) not in fds
    assert lines[3] == str(pid)  # its own process group
    assert lines[4] == "/dev/null"
    assert lines[5].split()[1] == "0000000000000000"  # no blocked signal
    assert lines[6] == "err"  # stderr into the same pipe


def test_sigpipe_is_back_to_default_in_the_child(tmp_path: Path) -> None:
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # Python ignores it
    out, _, _ = run(tmp_path, "grep SigIgn /proc/$$/status", sched.SchedPlan())
    ignored = int(out.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))


def test_a_refused_policy_runs_best_effort_and_says_why(tmp_path: Path) -> None:
    """Priority 0 is invalid for SCHED_FIFO: the job still runs, SCHED_OTHER, with the reason."""
    out, _, problem = run(tmp_path, "cut -d' ' -f41 /proc/$$/stat", sched.SchedPlan("fifo", 0))
    assert out.strip() == "0"
    assert problem is not None and "best effort" in problem


def test_a_missing_program_raises_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        pspawn.spawn(["no-such-program"], ENV, str(tmp_path), 1, sched.SchedPlan())
    with pytest.raises(OSError, match="/nonexistent/x"):
        pspawn.spawn(["/nonexistent/x"], ENV, str(tmp_path), 1, sched.SchedPlan())


def test_deadline_is_left_to_subprocess() -> None:
    with pytest.raises(ValueError, match="deadline"):
        pspawn.spawn(["true"], ENV, "/", 1, sched.SchedPlan("deadline", 0, 1, 2, 2))
