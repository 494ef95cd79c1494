"""farm.compat on a real QEMU guest: taskgen's stop(wait=True) returns within 5 s."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm.compat.taskgen.distributor import Distributor
from farm.compat.taskgen.task import Task
from farm.compat.taskgen.taskset import TaskSet
from farm.config import FarmConfig
from farm.image import ImageInfo
from tests.helpers import wait_for

pytestmark = pytest.mark.vm


class Monitor:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[str] = []

    def __taskset_start__(self, taskset: Any) -> None:
        with self.lock:
            self.calls.append("start")

    def __taskset_finish__(self, taskset: Any) -> None:
        with self.lock:
            self.calls.append("finish")

    def __taskset_stop__(self, taskset: Any) -> None:
        with self.lock:
            self.calls.append("stop")


def test_taskgen_stop_wait_on_a_qemu_guest(image: ImageInfo) -> None:
    where = Path(tempfile.mkdtemp(prefix="farm"))  # short: UNIX socket paths
    config = FarmConfig(
        backend="qemu",
        state_dir=where / "state",
        log_dir=where / "log",
        log_file=True,
        image_dir=image.kernel.parent,
        idle_linger=60.0,
        boot_timeout=120.0,
        profile={"accel": "tcg", "memory": 256},
    )
    long = TaskSet()
    long.append(Task({"pkg": "idle", "config": {"arg1": 60000}, "numberofjobs": 1}))
    dist = Distributor(config=config)
    mon = Monitor()
    dist.event_handler = mon
    try:
        dist.start(long, wait=False)
        wait_for("the set to start on the guest", lambda: "start" in mon.calls, timeout=240)
        time.sleep(1.0)
        t0 = time.monotonic()
        dist.stop(wait=True)
        assert time.monotonic() - t0 < 5
        wait_for("stop reported", lambda: "stop" in mon.calls, timeout=5)
        assert "finish" not in mon.calls
        assert dist.farm.machines(), "the guest stays up after stop()"
    finally:
        dist.close()
        assert dist.wait_closed(60)
        shutil.rmtree(where, ignore_errors=True)
