"""Chaos on real QEMU guests: SIGKILLed and SIGSTOPped QEMUs and agents killed in the guest.

A job of sleep-bound sets runs on the qemu backend while a seeded chaos
thread, every few seconds, picks a machine that is running a set and does one
of: SIGKILL its QEMU (crash), SIGSTOP its QEMU and screen (hang: a stopped
QEMU is not alive for farm, so it is destroyed within a second; SIGCONTed at
the end if still there), SIGSTOP a guest that is still booting (the boot ends
at once instead of at ``boot_timeout`` and frees its boot slot), or
kill the agent inside the guest (``exec`` op of the agent running ``kill -9``
of the pid ``status`` reports). Afterwards every set is finished exactly once
(SqliteMonitor and the job journal), none is lost or bad, and no QEMU or
screen of the farm is left. Small size (CI): 40 sets on 3 machines; full size
(``--full`` / FARM_FULL=1): 200 sets while the limit moves between 4 and 7.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from typing import Any

import psutil
import pytest

from farm import Distributor
from farm.agent import protocol
from farm.monitors import FINISHED_NOT_ONCE, SqliteMonitor
from tests.vm.test_distributor_vm import (  # noqa: F401  (farm_dir is a fixture)
    FarmDir,
    count,
    farm_dir,
    idle_sets,
    query,
    running,
)

SEED = 9


def kill_agent_in_guest(address: str, token: str) -> int:
    """Ask the guest's agent for its pid, then make it run ``kill -9`` on itself."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.settimeout(10)
        channel = protocol.client_handshake(sock, token)

        def call(rid: int, op: str, **args: Any) -> Any:
            channel.send({"type": "request", "id": rid, "op": op, "args": args})
            while True:
                frame = channel.recv()
                if frame.get("type") == "reply" and frame.get("id") == rid:
                    if not frame["ok"]:
                        raise RuntimeError(frame["error"])
                    return frame["result"]

        pid = int(call(1, "status")["pid"])
        call(2, "exec", command=f"kill -9 {pid}")
        with contextlib.suppress(OSError, protocol.ProtocolViolation, ConnectionError):
            while True:  # the agent's end closes the connection
                channel.recv()
    return pid


class Chaos(threading.Thread):
    """Injects seeded faults into machines that are running a set; counts them."""

    def __init__(self, dist: Distributor, fd: FarmDir, quota: dict[str, int], full: bool) -> None:
        super().__init__(name="chaos", daemon=True)
        self.dist, self.fd, self.quota, self.full = dist, fd, quota, full
        self.rng = random.Random(SEED)
        self.stop = threading.Event()
        self.done: Counter[str] = Counter()
        self.frozen: list[psutil.Process] = []
        self.limits: list[int] = []
        self.errors: list[str] = []

    def run(self) -> None:
        # full size: 20 faults within a 200-set job that runs ~1 min once every guest is up
        # small size: sets got faster (native workloads), so faults come as often as at full size
        pause = (0.8, 1.6)
        while not self.stop.wait(self.rng.uniform(*pause)):
            if self.full and self.rng.random() < 0.15:
                limit = self.rng.randint(4, 7)
                self.dist.set_max_machine_value(limit)
                self.limits.append(limit)
            kinds = [k for k, n in self.quota.items() if self.done[k] < n]
            if not kinds:
                return
            kind = self.rng.choice(kinds)
            busy = booting(self.dist) if kind == "sigstop-boot" else running(self.dist)
            if not busy:
                continue
            name = self.rng.choice(sorted(busy))
            try:
                if self._inject(kind, name):
                    self.done[kind] += 1
            except (OSError, RuntimeError, psutil.Error, protocol.ProtocolViolation) as exc:
                self.errors.append(f"{kind} {name}: {exc}")  # raced with a fault/finish

    def _inject(self, kind: str, name: str) -> bool:
        pid = self.fd.guest_pid(name)
        if pid is None:
            return False
        qemu = psutil.Process(pid)
        if kind == "sigkill":
            qemu.send_signal(signal.SIGKILL)
        elif kind in ("sigstop", "sigstop-boot"):
            # screen restarts a stopped window process: freeze it first, then the QEMU
            screen = qemu.parent()
            victims = [p for p in (screen, qemu) if p is not None and "screen" in p.name().lower()]
            victims.append(qemu)
            for proc in victims:
                proc.suspend()
                self.frozen.append(proc)
        else:
            address = next(m["address"] for m in self.dist.machines() if m["name"] == name)
            kill_agent_in_guest(address, self.dist.token)
        return True

    def thaw(self) -> None:
        for proc in self.frozen:
            if proc.is_running():  # same pid and start time
                with contextlib.suppress(psutil.Error):
                    proc.resume()


def booting(dist: Distributor) -> list[str]:
    """Names of the machines booting a guest now."""
    return [m["name"] for m in dist.machines() if m["state"] == "booting"]


@pytest.mark.timeout(1800)
def test_chaos_every_set_finished_exactly_once(
    farm_dir: FarmDir,  # noqa: F811  (the fixture imported above)
    full_size: bool,
    record_property: Any,
) -> None:
    sets, machines = (200, 5) if full_size else (60, 3)
    quota = (
        {"sigkill": 8, "sigstop": 4, "sigstop-boot": 3, "agent": 8}
        if full_size
        else {"sigkill": 2, "sigstop": 1, "sigstop-boot": 1, "agent": 2}
    )
    db = farm_dir.path / "results.db"
    dist = Distributor(farm_dir.config(set_tries=50, boot_retries=20, max_concurrent_boots=2))
    chaos = Chaos(dist, farm_dir, quota, full_size)
    t0 = time.monotonic()
    try:
        dist.set_max_machine_value(machines)
        job = dist.add_job(idle_sets(sets, 800), SqliteMonitor(db))
        chaos.start()
        assert dist.wait_finished(timeout=1500 if full_size else 400), dist.jobs()
    finally:
        chaos.stop.set()
        if chaos.ident is not None:
            chaos.join()
        dist.close()
        chaos.thaw()
    elapsed = time.monotonic() - t0

    report = {
        "sets": sets,
        "machines": machines,
        "faults": dict(chaos.done),
        "limits": chaos.limits,
        "races": chaos.errors,
        "stopped_runs": count(db, "SELECT COUNT(*) FROM runs WHERE state = 'stopped'"),
        "guests_spawned": len(farm_dir.recorded("qemu")),
        "seconds": round(elapsed, 1),
    }
    record_property("chaos", json.dumps(report))
    print("chaos report:", json.dumps(report))
    assert sum(chaos.done.values()) >= 3, (report, chaos.errors)
    if full_size:  # the job must not end before every planned fault was injected
        assert dict(chaos.done) == quota, report
    assert query(db, FINISHED_NOT_ONCE) == []
    assert count(db, "SELECT COUNT(*) FROM tasksets WHERE state = 'finished'") == sets
    assert count(db, "SELECT COUNT(DISTINCT variant) FROM tasksets") == sets
    assert job.bad == 0 and job.finished == sets
    assert report["stopped_runs"] == job.stopped
    with contextlib.closing(sqlite3.connect(farm_dir.state / "journal.db")) as con:
        states = con.execute("SELECT state, COUNT(*) FROM variants GROUP BY state").fetchall()
    assert states == [("finished", sets)]
    # no QEMU or screen of the farm left running after close
    deadline = time.monotonic() + 15
    while farm_dir.processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert farm_dir.processes() == [], [p.pid for p in farm_dir.processes()]
