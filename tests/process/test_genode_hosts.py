"""The Distributor drives Genode targets (fake dom0s on loopback, the hosts backend):
``session = "genode"`` in the config, taskgen's bin/ uploaded once per session."""

from __future__ import annotations

from pathlib import Path

from farm import Distributor
from farm.session.fake_dom0 import FakeDom0Server
from farm.taskset import Task, TaskSet
from tests.helpers import RecordingMonitor


def test_distributor_runs_genode_sets_and_uploads_binaries_once(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cond_42").write_bytes(b"\x7fELF cond_42")
    recorder = RecordingMonitor()
    with FakeDom0Server() as dom0:
        dist = Distributor(
            [f"127.0.0.1:{dom0.port}"],
            state_dir=tmp_path / "state",
            log_dir=tmp_path / "log",
            log_file=True,
            session="genode",
            genode_binaries=str(bin_dir),
            event_timeout=30.0,
            idle_linger=5.0,
        )
        try:
            taskset = TaskSet(
                [Task({"pkg": "cond_42", "numberofjobs": 2, "caps": 20, "x-run": range(3)})]
            )
            dist.add_job(taskset, recorder)
            assert dist.wait_finished(timeout=60.0), dist.jobs()
        finally:
            dist.close()
        record = dom0.record
    assert sorted(recorder.finished) == [0, 1, 2] and recorder.bad == []
    assert [t[0]["caps"] for t in record.tasks] == [20, 20, 20]
    # one session ran the three sets: bin/cond_42 went once, SEND_BINARIES then carried 0
    assert [(b.name, b.data) for b in record.binaries] == [("cond_42", b"\x7fELF cond_42")]
    assert record.commands.count(0xDE5F11E) == 3
