"""``farm status`` from another process sees a running Distributor (local backend, real agents)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from farm import Distributor
from farm.config import FarmConfig
from farm.control import ControlClient
from farm.taskset import Task, TaskSet
from tests.helpers import run_farm


def test_status_json_shows_machines_and_jobs_of_a_running_farm(tmp_path: Path) -> None:
    (tmp_path / "farm.toml").write_text(
        f'backend = "local"\nstate_dir = "{tmp_path / "state"}"\nlog_dir = "{tmp_path / "log"}"\n'
    )
    config = FarmConfig.load(tmp_path / "farm.toml", idle_linger=0.2, heartbeat_timeout=5.0)
    dist = Distributor(config)
    long_sets = TaskSet([Task({"pkg": "hey", "period": 50, "numberofjobs": 40, "x-run": range(6)})])
    try:
        dist.add_job(long_sets, None)
        dist.set_max_machine_value(2)
        client = ControlClient.for_state_dir(tmp_path / "state")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [m for m in client.status()["machines"] if m["current"]]
            if len(running) == 2:
                break
            time.sleep(0.1)
        res = run_farm(tmp_path, "status", "--json")  # finds the socket through ./farm.toml
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert doc["pid"] == os.getpid() and doc["limit"] == 2
        names = sorted(m["name"] for m in doc["machines"])
        assert names == ["qemu1", "qemu2"], doc["machines"]
        for m in doc["machines"]:
            assert m["address"].startswith("127.0.0.1:") and m["restarts"] == 0
            assert m["current"] is None or m["current"].startswith("farm.taskset")
        (job,) = doc["jobs"]
        assert job["total"] == 6 and not job["done"]
        assert doc["leases"] == [] and doc["hosts"] == []

        table = run_farm(tmp_path, "status")
        assert table.returncode == 0, table.stderr
        assert "machines" in table.stdout and "qemu1" in table.stdout and "jobs" in table.stdout
    finally:
        dist.close()
    gone = run_farm(tmp_path, "status")
    assert gone.returncode == 1
    sock = (tmp_path / "state" / "control.sock").resolve()
    assert f"no farm running here: {sock} not found" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_status_without_a_farm_exits_1_with_one_line(tmp_path: Path) -> None:
    res = run_farm(tmp_path, "status", "--json")
    assert res.returncode == 1
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no farm running here" in lines[0], res.stderr
