"""In a real guest: the kernel keeps time with the TSC, and a periodic native job is
pre-spawned and released on its gate (the job reports as itself, with its policy).

Under TCG the guest has no HPET or PM timer, so without the host's TSC rate on its
command line (``tsc_early_khz``, farm/profile.py) its TSC calibration often fails and it
runs on the ``refined-jiffies`` clocksource. One guest, one short set.
"""

from __future__ import annotations

from typing import Any

import pytest

from farm.profile import MachineProfile, host_tsc_khz
from tests.vm.conftest import BOOT_TIMEOUT, GuestFactory
from tests.vm.test_rt_policy_guest import one, run_set

pytestmark = pytest.mark.vm

TOKEN = "vm-timing-token"
CLOCK = "cat /sys/devices/system/clocksource/clocksource0/current_clocksource /proc/cmdline"
TASKS: list[dict[str, Any]] = [
    {"id": 1, "pkg": "shell", "config": {"command": CLOCK}},
    {"id": 2, "pkg": "hey", "priority": 30, "period": 300, "numberofjobs": 3},
]


@pytest.mark.timeout(600)
def test_the_guest_runs_on_the_tsc_and_releases_pre_spawned_jobs(
    profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    with guest_factory(profile, TOKEN) as guest:
        channel = guest.wait_for_agent(TOKEN, BOOT_TIMEOUT)
        with channel.sock as sock:
            sock.settimeout(120)
            events = run_set(channel, TASKS)
    clocksource, cmdline = one(events, 1, "EXIT")["output"].splitlines()[:2]
    khz = host_tsc_khz()
    if khz is not None:
        assert f"tsc_early_khz={khz}" in cmdline.split()
        assert clocksource in ("tsc", "tsc-early"), cmdline
    starts = [e for e in events if e["task_id"] == 2 and e["type"] == "START"]
    exits = [e for e in events if e["task_id"] == 2 and e["type"] == "EXIT"]
    assert [e["job"] for e in starts] == [0, 1, 2]
    assert all(e["sched"] == "fifo:30" for e in starts)
    assert [e["output"] for e in exits] == [f"Hey! I am task 2 job {k}.\n" for k in range(3)]
    assert all(e["ts"] >= e["release"] for e in starts)
