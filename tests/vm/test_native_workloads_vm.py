"""A real guest runs one job of every built-in pkg natively (farm-workload in the initrd)."""

from __future__ import annotations

import re
from typing import Any

from farm.agent import pkgs
from farm.image import ImageInfo
from farm.profile import MachineProfile
from tests.vm.conftest import BOOT_TIMEOUT, GuestFactory

TOKEN = "vm-native-token"
#: pkg -> (config, whole output); every job also gets a 2 s period as a wall-clock bound
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "hey": ({}, r"Hey! I am task 0 job 0\.\n"),
    "namaste": ({}, r"Namaste from task 1 job 0\.\n"),
    "pi": ({"digits": 30}, r"3\.141592653589793238462643383279\n"),
    "cond_42": ({"arg": 42}, r"condition met, no counting\n"),
    "cond_mod": ({"arg": 3, "count": 1000}, r"counted to 1000\n"),
    "linpack": ({"n": 20}, r"linpack n=20 residual=\d\.\d{3}e-\d\d\n"),
    "tumatmul": ({"arg1": 10}, r"tumatmul n=10 trace=-?\d+\.\d{6}\n"),
    "idle": ({"ms": 5}, r""),
    "memhog": ({"bytes": 1 << 20}, r"memhog holds 1048576 bytes\n"),
}


def test_every_builtin_runs_natively_in_a_guest(
    image: ImageInfo, profile: MachineProfile, guest_factory: GuestFactory
) -> None:
    assert set(CASES) == set(pkgs.BUILTIN_PKGS)
    assert image.native is not None and image.native.is_file()
    tasks = [
        {"id": i, "pkg": pkg, "config": config, "period": 2000, "numberofjobs": 1}
        for i, (pkg, (config, _)) in enumerate(CASES.items())
    ]
    over = len(tasks)  # memhog beyond its quota: OUT_OF_QUOTA, as with the Python one
    tasks.append({"id": over, "pkg": "memhog", "config": {"bytes": 64 << 20}, "quota": "8M"})
    with guest_factory(profile, TOKEN) as guest:
        channel = guest.wait_for_agent(TOKEN, BOOT_TIMEOUT)
        sock = channel.sock
        with sock:
            sock.settimeout(120)
            channel.send({"type": "request", "id": 1, "op": "start", "args": {"tasks": tasks}})
            events: list[dict[str, Any]] = []
            reply = None
            while reply is None or len(
                {e["task_id"] for e in events if e["type"] == "JOBS_DONE"}
            ) < len(tasks):
                message = channel.recv()
                if message["type"] == "event":
                    events.append(message["event"])
                elif message["type"] == "reply" and message["id"] == 1:
                    reply = message
                    assert reply["ok"], reply
    assert [e for e in events if e["type"] == "NOTICE" and e["task_id"] == -1] == [], events
    ends = {e["task_id"]: e for e in events if e["type"] not in ("START", "JOBS_DONE", "NOTICE")}
    for i, (pkg, (_, output)) in enumerate(CASES.items()):
        end = ends[i]
        assert (end["type"], end["status"]) == ("EXIT", 0), (pkg, end)
        assert re.fullmatch(output, end["output"]), (pkg, end["output"])
    assert ends[over]["type"] == "OUT_OF_QUOTA", ends[over]
    assert "out of memory quota" in ends[over]["output"]
