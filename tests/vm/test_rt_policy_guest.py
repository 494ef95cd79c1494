"""In a real guest, jobs run under the real-time policy their task asks for.

The guest agent runs as root on farm's PREEMPT_RT kernel, so SCHED_FIFO must apply: the
START event's ``sched`` names it, no "best effort" NOTICE is sent, and the job reads its
own policy from /proc/$$/stat. SCHED_DEADLINE likewise, unless the guest kernel lacks it
(then the agent must say so in a NOTICE and the job runs SCHED_OTHER). One guest, one
short set.
"""

from __future__ import annotations

from typing import Any

import pytest

from farm.agent.protocol import Channel
from farm.profile import MachineProfile
from tests.vm.conftest import BOOT_TIMEOUT, GuestFactory

pytestmark = pytest.mark.vm

TOKEN = "vm-rt-policy-token"
READ = "cat /proc/$$/stat"  # the job's own shell (SCHED_DEADLINE resets on fork)
TASKS: list[dict[str, Any]] = [
    {"id": 1, "pkg": "shell", "config": {"command": READ}, "priority": 42},
    {
        "id": 2,
        "pkg": "shell",
        "config": {"command": READ},
        "priority": 128,
        "period": 1000,
        "executiontime": 500,
    },
]


def policy_of(stat_line: str) -> tuple[int, int]:
    """(rt_priority, policy) from a /proc/PID/stat line."""
    fields = stat_line.rsplit(")", 1)[1].split()
    return int(fields[37]), int(fields[38])


def run_set(channel: Channel, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start ``tasks`` on the agent; every event until each task sent JOBS_DONE."""
    channel.send({"type": "request", "id": 1, "op": "start", "args": {"tasks": tasks}})
    events: list[dict[str, Any]] = []
    done: set[int] = set()
    while done != {t["id"] for t in tasks}:
        message = channel.recv()
        if message["type"] == "reply":
            assert message["ok"], message
        elif message["type"] == "event":
            event = message["event"]
            events.append(event)
            if event["type"] == "JOBS_DONE":
                done.add(event["task_id"])
    return events


def one(events: list[dict[str, Any]], task_id: int, kind: str) -> dict[str, Any]:
    (found,) = [e for e in events if e["task_id"] == task_id and e["type"] == kind]
    return found


@pytest.mark.timeout(600)
def test_jobs_run_under_fifo_and_deadline_in_the_guest(
    profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    with guest_factory(profile, TOKEN) as guest:
        channel = guest.wait_for_agent(TOKEN, BOOT_TIMEOUT)
        with channel.sock as sock:
            sock.settimeout(120)
            events = run_set(channel, TASKS)
    notices = {e["task_id"]: e["detail"] for e in events if e["type"] == "NOTICE"}

    assert 1 not in notices, notices  # root on farm's kernel: SCHED_FIFO is never refused
    assert one(events, 1, "START")["sched"] == "fifo:42"
    assert policy_of(one(events, 1, "EXIT")["output"]) == (42, 1)

    deadline_start = one(events, 2, "START")
    deadline_stat = policy_of(one(events, 2, "EXIT")["output"])
    if 2 in notices:  # only a kernel without SCHED_DEADLINE may refuse it
        assert "not supported" in notices[2] or "EINVAL" in notices[2], notices
        assert deadline_start["sched"] == "other"
        assert deadline_stat == (0, 0)
    else:
        assert deadline_start["sched"] == "deadline:500ms/1000ms/1000ms"
        assert deadline_stat == (0, 6)
