"""can_leave_idle() agrees with the kernel: a real process, as root and as an unprivileged user.

A farm that cannot move a SCHED_IDLE spare back to SCHED_OTHER (no CAP_SYS_NICE, default
RLIMIT_NICE: a user running the qemu backend) must not make spares SCHED_IDLE, or its
machines would run at idle priority for good (farm/backend/spare_pool.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.process

PROBE = """
import os, sys
sys.path.insert(0, sys.argv[1])
from farm.backend.spare_pool import can_leave_idle
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
try:
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    left = True
except PermissionError:
    left = False
print(can_leave_idle(), left)
"""


def _probe(*prefix: str) -> str:
    argv = [*prefix, sys.executable, "-c", PROBE, str(REPO)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout


def test_root_may_leave_idle_and_the_probe_says_so() -> None:
    assert _probe() == "True True\n"


def test_an_unprivileged_user_may_not_and_the_probe_says_so() -> None:
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) runs the probe as nobody"
    nobody = [setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    assert _probe(*nobody, "--inh-caps=-all") == "False False\n"
