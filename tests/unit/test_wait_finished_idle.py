"""wait_finished() returns once the last set settles, not when the idle slot leaves.

A submission is done only when its variants are exhausted, which the slot finds
out when it asks the pool for its next set (after the last set settled). That
discovery must wake every waiter: otherwise wait_finished() slept until the idle
slot exited at ``idle_linger`` and the guest it meant to inspect was gone (a vm
test read a destroyed guest's run directory after a 60 s linger).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.tasksets.example import Hey0TaskSet
from tests.helpers import RecordingMonitor

from .test_distributor import make, many

pytestmark = pytest.mark.unit

LINGER = 20.0  # a wait that returns only when the slot leaves finds no guest any more


@pytest.mark.parametrize("with_monitor", [False, True], ids=["no-monitor", "monitor"])
def test_wait_finished_returns_while_the_slot_idles(tmp_path: Path, with_monitor: bool) -> None:
    dist, backend = make(tmp_path, idle_linger=LINGER)
    try:
        dist.set_max_machine_value(1)
        for round_ in range(5):  # each round: one job, its last set, the slot goes idle
            mon = RecordingMonitor() if with_monitor else None
            dist.add_job(Hey0TaskSet() if round_ % 2 else many(2), mon)
            assert dist.wait_finished(timeout=4 * LINGER), f"round {round_}: still waiting"
            assert len(backend.live_guests()) == 1, f"round {round_}: woke only when the slot left"
    finally:
        dist.close()
