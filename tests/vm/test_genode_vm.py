"""Genode on spawned QEMU guests, driven by the Distributor (issue 14, part 4).

The guests boot farm's image with ``farm.dom0=fake`` on the kernel command
line: init starts the fake Genode dom0 (farm/session/fake_dom0.py, events
paced in real time) in place of the farm agent, and ``session = "genode"``
makes the Distributor speak the Taskloader protocol to it, dialling until the
guest has booted. A guest frozen mid-set (SIGSTOP) goes silent: it is destroyed
(stopped, or silent past ``event_timeout``) and its set re-queued; nothing is lost.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import psutil

from farm import Distributor
from farm.profile import FAST_KERNEL_ARGS
from farm.taskset import Task, TaskSet
from tests.helpers import RecordingMonitor, wait_for
from tests.vm.test_distributor_vm import PROFILE, WAIT, FarmDir, farm_dir, running, runs

__all__ = ["farm_dir"]  # the fixture, shared with test_distributor_vm

GENODE_PROFILE: dict[str, Any] = {
    **PROFILE,
    "session": "genode",
    "kernel_args": f"{FAST_KERNEL_ARGS} farm.dom0=fake",
}


def genode_sets(n: int, jobs: int = 6) -> TaskSet:
    """``n`` variants of two periodic tasks (~0.25 s per job on the fake dom0's clock)."""
    return TaskSet(
        [
            Task({"pkg": "hey", "period": 250, "executiontime": 20, "numberofjobs": jobs,
                  "caps": 50, "x-run": range(n)}),
            Task({"pkg": "pi", "period": 500, "executiontime": 50, "numberofjobs": jobs // 2}),
        ]
    )  # fmt: skip


def test_genode_sets_finish_on_spawned_guests(farm_dir: FarmDir) -> None:
    recorder = RecordingMonitor()
    dist = Distributor(farm_dir.config(profile=GENODE_PROFILE, event_timeout=30.0))
    try:
        dist.add_job(genode_sets(3), recorder)
        assert dist.wait_finished(timeout=WAIT), dist.jobs()
    finally:
        dist.close()
    assert sorted(recorder.finished) == [0, 1, 2]
    assert recorder.bad == [] and recorder.stopped == []
    assert recorder.event_types.count("JOBS_DONE") == 6  # two tasks, three sets
    assert "connected" in (farm_dir.log / "distributor.log").read_text()


def test_silent_genode_guest_is_replaced_and_its_set_rerun(farm_dir: FarmDir) -> None:
    recorder = RecordingMonitor()
    cfg = farm_dir.config(profile=GENODE_PROFILE, event_timeout=4.0, max_machines=1)
    dist = Distributor(cfg)
    frozen: list[psutil.Process] = []
    try:
        dist.add_job(genode_sets(2, jobs=16), recorder)
        wait_for("the first set to run", lambda: recorder.first_event.is_set() and running(dist))
        hung_set = int(running(dist)["qemu1"].rsplit("#", 1)[1])
        pid = farm_dir.guest_pid("qemu1")
        assert pid is not None
        qemu = psutil.Process(pid)
        screen = qemu.parent()
        assert screen is not None and "screen" in screen.name().lower()
        frozen += [screen, qemu]  # screen restarts a stopped child: freeze it first
        for proc in frozen:
            proc.suspend()
        assert dist.wait_finished(timeout=WAIT), dist.jobs()
        wait_for("a new guest for qemu1", lambda: len(farm_dir.recorded("qemu", "qemu1")) >= 2)
        hung_gone = not runs(pid)
    finally:
        dist.close()
        for proc in frozen:
            if proc.is_running():
                with contextlib.suppress(psutil.Error):
                    proc.resume()
                    proc.kill()
    dist_log = (farm_dir.log / "distributor.log").read_text()
    # a stopped QEMU is caught by the slot's alive check (within 0.5 s), usually before the
    # event timeout; the event timeout itself is tested against a fake dom0 that stays
    # alive while it goes silent (tests/unit/test_genode_spawned.py, test_session_genode.py)
    assert re.search(rf"#{hung_set}.*(event timeout 4\.0s|died or is stopped)", dist_log), dist_log
    assert hung_gone, "the silent guest was not destroyed"
    assert sorted(recorder.finished) == [0, 1]  # nothing lost
    assert recorder.stopped == [hung_set] and recorder.bad == []
