"""In a real guest, the ``cyclictest`` pkg runs Debian's cyclictest and reports sane latency.

One guest, one short cyclictest job (SCHED_FIFO 80 measuring thread, 1 ms interval): the EXIT
event carries ``latency_us`` with min <= avg <= max, every figure positive and the loop count
asked for; its detail names them. No bound on the figures themselves (TCG varies).
"""

from __future__ import annotations

import pytest

from farm.profile import MachineProfile
from tests.vm.conftest import BOOT_TIMEOUT, GuestFactory
from tests.vm.test_rt_policy_guest import one, run_set

pytestmark = pytest.mark.vm

TOKEN = "vm-cyclictest-token"
LOOPS = 200


@pytest.mark.timeout(600)
def test_cyclictest_job_reports_latency_figures(
    profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    task = {"id": 1, "pkg": "cyclictest", "config": {"loops": LOOPS, "interval_us": 1000}}
    with guest_factory(profile, TOKEN) as guest:
        channel = guest.wait_for_agent(TOKEN, BOOT_TIMEOUT)
        with channel.sock:
            channel.sock.settimeout(120)
            events = run_set(channel, [task])
    end = one(events, 1, "EXIT")
    figures = end["latency_us"]
    assert 0 < figures["min"] <= figures["avg"] <= figures["max"], end
    assert figures["threads"] == 1 and figures["loops"] == LOOPS, end
    assert end["detail"].startswith("latency min/avg/max"), end
