"""NetJobs targets named by farm machine name (qemu1, qemu2) of a running local Distributor."""

from __future__ import annotations

import time
from pathlib import Path

from farm import Distributor
from farm.config import FarmConfig
from farm.control import ControlClient
from farm.netjobs import Status, run_config
from farm.taskset import Task, TaskSet


def test_machine_names_resolve_through_the_control_socket(tmp_path: Path) -> None:
    config = FarmConfig(backend="local", state_dir=tmp_path / "state", log_dir=tmp_path / "log",
                        idle_linger=0.2, heartbeat_timeout=5.0)  # fmt: skip
    dist = Distributor(config)
    busy = TaskSet([Task({"pkg": "hey", "period": 50, "numberofjobs": 200, "x-run": range(2)})])
    try:
        dist.add_job(busy, None)
        dist.set_max_machine_value(2)
        client = ControlClient.for_state_dir(config.state_dir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len([m for m in client.status()["machines"] if m["current"]]) == 2:
                break
            time.sleep(0.1)
        cfg = tmp_path / "machines.cfg"
        cfg.write_text('m:\nqemu1: "echo one"\nqemu2: "echo two"\nend\n')
        (result,) = run_config(cfg, farm_config=config)  # token: the farm's own
        assert [r.status for r in result.results] == [Status.SUCCESS, Status.SUCCESS], [
            (r.status, r.detail) for r in result.results
        ]
        assert [r.output for r in result.results] == ["one\n", "two\n"]
        assert all(r.address and r.address.startswith("127.0.0.1:") for r in result.results)
    finally:
        dist.close()
