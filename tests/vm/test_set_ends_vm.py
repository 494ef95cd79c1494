"""In a real guest, what a job or an exec run starts with setsid ends with its set or run.

The guest agent runs as root with cgroup v2 mounted by /init, so each set and each exec
run gets its own cgroup and ``cgroup.kill``: a job's setsid'ed child must be in the
set's cgroup while it runs and gone after ``stop`` and after the set's own end; an exec
run's likewise after the run. One guest, a few short sets.
"""

from __future__ import annotations

import base64
import itertools
import time
from typing import Any

import pytest

from farm.agent.protocol import Channel
from farm.profile import MachineProfile
from tests.vm.conftest import BOOT_TIMEOUT, GuestFactory

pytestmark = pytest.mark.vm

TOKEN = "vm-set-ends-token"
_ids = itertools.count(1)


class Agent:
    """Requests on one channel; events that arrive meanwhile are kept."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.events: list[dict[str, Any]] = []

    def call(self, op: str, **args: Any) -> Any:
        rid = next(_ids)
        self.channel.send({"type": "request", "id": rid, "op": op, "args": args})
        while True:
            message = self.channel.recv()
            if message["type"] == "event":
                self.events.append(message["event"])
            elif message["type"] == "reply" and message["id"] == rid:
                assert message["ok"], message
                return message["result"]

    def wait_event(self, kind: str, task_id: int) -> None:
        while not any(e["type"] == kind and e["task_id"] == task_id for e in self.events):
            message = self.channel.recv()
            if message["type"] == "event":
                self.events.append(message["event"])

    def shell(self, command: str) -> str:
        """Run ``command`` as an exec run; its output once it ended."""
        run = self.call("exec", command=command)
        out = b""
        while True:
            reply = self.call("exec_poll", id=run["id"], offset=len(out), wait=2.0)
            out += base64.b64decode(reply["data"])
            if reply["eof"]:
                assert reply["state"] == "exited", reply
                return out.decode()

    def sleepers(self, tag: str) -> list[str]:
        """The cgroup line of every live ``sleep TAG`` process in the guest."""
        found = self.shell(
            "for d in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null); "
            f'[ "$c" = "sleep {tag} " ] && grep "^0::" $d/cgroup; done; true'
        )
        return found.split()

    def gone(self, tag: str) -> bool:
        """True once no ``sleep TAG`` runs (a set's end is handled just after its last event)."""
        deadline = time.monotonic() + 30
        while self.sleepers(tag):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True


@pytest.mark.timeout(600)
def test_setsid_children_end_with_their_set_and_exec_run_in_the_guest(
    profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    with guest_factory(profile, TOKEN) as guest:
        channel = guest.wait_for_agent(TOKEN, BOOT_TIMEOUT)
        with channel.sock as sock:
            sock.settimeout(120)
            agent = Agent(channel)
            command = "setsid sleep 7001 & sleep 600"
            agent.call("start", tasks=[{"id": 1, "pkg": "shell", "config": {"command": command}}])
            agent.wait_event("START", 1)
            deadline = time.monotonic() + 60
            while not (running := agent.sleepers("7001")) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert running and all("/set-" in line for line in running), running
            agent.call("stop")
            assert not agent.sleepers("7001"), "a job's setsid child outlived the stop"

            command = "setsid sleep 7002 & true"
            agent.call("start", tasks=[{"id": 2, "pkg": "shell", "config": {"command": command}}])
            agent.wait_event("JOBS_DONE", 2)
            assert agent.gone("7002"), "a job's setsid child outlived its set"

            agent.shell("setsid sleep 7003 & echo started")
            assert not agent.sleepers("7003"), "an exec run's setsid child outlived the run"
