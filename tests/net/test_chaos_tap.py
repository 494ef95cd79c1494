"""Network cut on the bridge: a guest's tap downed mid-set (inside a private namespace).

Three bridged QEMU guests (TCG) in a ``farmtest-XXXX`` namespace run a job of
sleep-bound sets. While a set runs, ``ip link set farm-tapN down`` cuts that
guest off the bridge: its heartbeats stop, farm declares it hung, destroys it
and re-queues the set, which then finishes exactly once on another guest
(SqliteMonitor); the slot is served by a new guest on a fresh tap. The
``netns`` fixture checks that nothing is left running in the namespace.
"""

from __future__ import annotations

import json
import re

import pytest

from farm.image import ImageInfo
from tests.helpers import query

from .conftest import NetNs

SCENARIO = r"""
import json, re, subprocess, sys, time
from pathlib import Path
from farm.config import FarmConfig
from farm import Distributor
from farm.monitors import SqliteMonitor
from farm.taskset import Task, TaskSet

base, images, sets = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
config = FarmConfig(
    backend="qemu", network="bridge", state_dir=base / "state", log_dir=base / "log",
    image_dir=images, idle_linger=5.0, boot_timeout=150.0, max_concurrent_boots=3,
    heartbeat_timeout=4.0, set_tries=10, profile={"accel": "tcg", "memory": 256},
)
ts = TaskSet([Task({"pkg": "idle", "config": {"ms": 2500}, "numberofjobs": 1,
                    "x-run": range(sets)})])
report = {}
dist = Distributor(config)
try:
    dist.set_max_machine_value(3)
    job = dist.add_job(ts, SqliteMonitor(base / "results.db"))
    deadline = time.monotonic() + 200
    while True:  # a machine well into a set (so the cut lands mid-set)
        busy = [m for m in dist.machines() if m["state"] == "running"]
        if len(busy) >= 2:
            break
        assert time.monotonic() < deadline, dist.machines()
        time.sleep(0.1)
    time.sleep(0.5)
    victim = next(m for m in dist.machines() if m["state"] == "running")
    n = int(re.sub(r"\D", "", victim["name"]))
    tap = f"farm-tap{n}"
    report["victim"], report["set"], report["tap"] = victim["name"], victim["current"], tap
    cut = subprocess.run(["ip", "link", "set", tap, "down"], capture_output=True, text=True)
    report["cut_rc"], report["cut_err"] = cut.returncode, cut.stderr
    report["finished"] = dist.wait_finished(timeout=300)
    report["jobs"] = dist.jobs()
    report["taps_after"] = subprocess.run(["ip", "-o", "link", "show", "master", "br0"],
                                          capture_output=True, text=True).stdout
finally:
    dist.close()
print(json.dumps(report, default=str))
"""


@pytest.mark.timeout(500)
def test_tap_down_mid_set_reruns_it_elsewhere_exactly_once(
    netns: NetNs, image: ImageInfo, full_size: bool
) -> None:
    sets = 24 if full_size else 8
    result = netns.python(
        SCENARIO, str(netns.dir), str(image.kernel.parent), str(sets), timeout=450
    )
    dist_log = netns.dir / "log" / "distributor.log"
    text = dist_log.read_text(errors="replace") if dist_log.exists() else ""
    context = f"stderr:\n{result.stderr[-3000:]}\nlog:\n{text[-4000:]}"
    assert result.returncode == 0, context
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cut_rc"] == 0, report
    assert report["finished"] is True, context
    victim, key_set = report["victim"], report["set"]
    index = int(key_set.rsplit("#", 1)[1])

    db = netns.dir / "results.db"
    assert query(db, "SELECT state, COUNT(*) FROM tasksets GROUP BY state") == [
        ("finished", sets)
    ], context
    not_once = (
        "SELECT t.variant FROM tasksets t LEFT JOIN runs r ON r.taskset_id = t.id "
        "AND r.state = 'finished' GROUP BY t.id HAVING COUNT(r.id) != 1"
    )
    assert query(db, not_once) == []
    attempts = (
        "SELECT r.attempt, r.state FROM runs r JOIN tasksets t ON t.id = r.taskset_id "
        f"WHERE t.variant = {index} ORDER BY r.attempt"
    )
    assert query(db, attempts) == [(1, "stopped"), (2, "finished")], context
    (job,) = report["jobs"]
    assert job["bad"] == 0 and job["stopped"] == 1

    # the cut guest was found hung by the heartbeat check and its set interrupted
    interrupted = re.search(rf"{victim}: set \S+ #{index} interrupted: .*heartbeat", text)
    assert interrupted is not None, context
    # ... and re-run on another guest: the finish was logged after the interruption by a
    # machine whose guest booted after the cut, or by another machine
    after = text[interrupted.end() :]
    finish = re.search(rf"farm\.core\.slot\.(qemu\d+): set \S+ #{index} finished", after)
    assert finish is not None, context
    if finish.group(1) == victim:  # same slot: must be the replacement guest
        assert re.search(rf"{victim}: ready at", after[: finish.start()]), context
    # the slot recovered: a replacement guest got ready after the cut
    assert re.search(rf"{victim}: guest lost: .*; replacing it", after), context
