"""``farm status`` stays readable at 80 columns: nothing cut, addresses and URIs whole."""

from __future__ import annotations

import io
import time
from typing import Any

from rich.console import Console

from farm.cli.status import render

MACHINES = [
    {
        "name": f"qemu{i}",
        "state": "running",
        "retiring": False,
        "address": "10.200.40.12:3001",
        "current": "farm.tasksets.example.ExperimentTaskSet:0f1e2d3c4b5a#7",
        "uptime": 93.2,
        "restarts": 0,
        "sets_done": 3,
    }
    for i in (1, 2)
]
JOBS = [
    {"job": 1, "name": "ExperimentTaskSet", "finished": 3, "total": 9, "in_flight": 2}
    | {"stopped": 0, "bad": 0, "done": False}
]
HYPERVISOR = {
    "name": "hv1",
    "uri": "qemu+ssh://farm@hypervisor-one.example.org/system",
    "state": "backoff",
    "machines": 2,
    "guests": ["qemu1", "qemu2"],
    "limit": 4,
    "network": "bridge",
    "last_error": "cannot open libvirt connection: Connection reset by peer",
    "failures": 2,
    "next_retry": 12.4,
    "spawned": 7,
    "lost": 1,
    "uploads": 2,
}


def screen(doc: dict[str, Any]) -> str:
    console = Console(width=80, file=io.StringIO(), force_terminal=False)
    base = {"pid": 1, "started": time.time(), "backend": "multihost", "limit": 4}
    base |= {"network": "user", "state_dir": "/srv/exp/.farm"}
    console.print(*render(base | {"machines": MACHINES, "jobs": JOBS} | doc))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "…" not in out, out  # nothing truncated
    return str(out)


def test_machines_rows_fit_with_whole_addresses_and_short_set_names() -> None:
    out = screen({})
    row = next(line for line in out.splitlines() if "qemu1" in line)
    assert "10.200.40.12:3001" in row and "ExperimentTaskSet#7" in row


def test_hypervisor_hosts_are_blocks_with_every_field_whole() -> None:
    out = screen({"hosts": [HYPERVISOR, HYPERVISOR | {"name": "hv2"}]})
    flat = " ".join(out.split())
    assert "host hv1" in out and "host hv2" in out
    assert "qemu+ssh://farm@hypervisor-one.example.org/system" in flat
    assert "Connection reset by peer" in flat and "qemu1, qemu2" in flat
    assert "12s" in flat and "None" not in out


def test_existing_targets_stay_one_table() -> None:
    hosts = [
        {"address": "10.0.0.1:3001", "state": "free", "probes": 3, "refusals": 0}
        | {"ever_up": True, "guest": None}
    ]
    out = screen({"hosts": hosts})
    assert "hosts" in out and "10.0.0.1:3001" in out and "None" not in out
