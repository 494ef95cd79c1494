"""farm.compat Distributors: MaLSAMi keywords, task['jobs'] for user monitors, taskgen stop()."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm.backend.fake import FakeBackend, session_class_for
from farm.compat.malsami.distributorClass import Distributor as MalsamiDistributor
from farm.compat.malsami.monitor import AbstractMonitor
from farm.compat.malsami.monitors.loggingMonitor import LoggingMonitor
from farm.compat.taskgen.distributor import Distributor as TaskgenDistributor
from farm.compat.taskgen.events.csv import CsvHandler
from farm.config import FarmConfig
from farm.errors import ConfigError
from tests.data.compat import malsami_test, taskgen_example, taskgen_test
from tests.helpers import wait_for


class OneArgMonitor(AbstractMonitor):
    """A user monitor of the MaLSAMi shape: ``__taskset_event__(self, taskset)``."""

    def __init__(self) -> None:
        self.events = 0
        self.started: list[Any] = []
        self.finished: list[Any] = []
        self.lock = threading.Lock()

    def __taskset_event__(self, taskset: Any) -> None:  # one argument, as MaLSAMi called it
        with self.lock:
            self.events += 1

    def __taskset_start__(self, taskset: Any) -> None:
        with self.lock:
            self.started.append(taskset)

    def __taskset_finish__(self, taskset: Any) -> None:
        with self.lock:
            self.finished.append(taskset)

    def __taskset_stop__(self, taskset: Any) -> None:
        pass

    def __taskset_bad__(self, taskset: Any, n: int) -> None:
        pass


def _farm(tmp_path: Path) -> dict[str, Any]:
    backend = FakeBackend()
    config = FarmConfig(state_dir=tmp_path / "state", log_dir=tmp_path / "log", idle_linger=0.05)
    return {"config": config, "backend": backend, "session_class": session_class_for(backend)}


def _malsami(tmp_path: Path, **kw: Any) -> MalsamiDistributor:
    keywords: dict[str, Any] = {
        "max_machine": 1,
        "max_allowed": 4,
        "session_type": "QemuSession",
        "logging_level": logging.DEBUG,
        "port": 3001,
        "startup_delay": 20,
        "set_tries": 1,
        "timeout": 40,
    }
    keywords.update(kw)
    return MalsamiDistributor(**keywords, **_farm(tmp_path))


def test_malsami_keywords_map_onto_farm_config(tmp_path: Path) -> None:
    dist = _malsami(tmp_path, max_machine=2, set_tries=3, timeout=30)
    try:
        cfg = dist.farm.config
        assert (cfg.max_machines, cfg.machine_cap, cfg.agent_port) == (2, 4, 3001)
        assert (cfg.set_tries, cfg.heartbeat_timeout) == (3, 30)
        assert dist.get_max_machine_value() == 2
    finally:
        dist.close()


def test_malsami_unknown_keyword_and_session_type_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown keyword.*bogus.*max_machine"):
        MalsamiDistributor(bogus=1, **_farm(tmp_path))
    with pytest.raises(ConfigError, match=r"session_type 'PandaSession'"):
        MalsamiDistributor(session_type="PandaSession", **_farm(tmp_path))


def test_malsami_set_max_above_cap_is_capped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dist = _malsami(tmp_path)
    try:
        with caplog.at_level(logging.INFO, logger="farm.compat"):
            dist.set_max_machine_value(9)
        assert dist.get_max_machine_value() == 4
        assert "above max_allowed 4" in caplog.text
        with pytest.raises(ValueError, match="greater than zero"):
            dist.set_max_machine_value(0)
    finally:
        dist.close()


def test_malsami_add_job_list_fills_task_jobs_for_one_arg_monitor(tmp_path: Path) -> None:
    dist = _malsami(tmp_path)
    mon = OneArgMonitor()
    try:
        dist.add_job([malsami_test.exampleTest(), malsami_test.exampleTest()], mon)
        wait_for("both sets finished", lambda: len(mon.finished) == 2, timeout=60)
    finally:
        dist.close()
    assert mon.events > 0
    for taskset in mon.finished:
        hey = next(iter(taskset))
        assert sorted(hey["jobs"], key=int) == ["1", "2", "3", "4", "5"]  # numberofjobs 5
        for record in hey["jobs"].values():
            start, end, kind = record
            assert isinstance(start, int) and end >= start and kind == "EXIT"


def test_malsami_example5_runs_every_variant(tmp_path: Path) -> None:
    dist = _malsami(tmp_path, max_machine=4)
    mon = OneArgMonitor()
    try:
        dist.add_job([malsami_test.example5()], mon)
        wait_for("256 variants finished", lambda: len(mon.finished) == 4**4, timeout=120)
    finally:
        dist.close()
    args = {tuple(t["config"]["arg1"] for t in list(ts)[1:]) for ts in mon.finished}
    assert len(args) == 4**4  # every combination of the four Variants(5) once
    assert all(len(next(iter(ts))["jobs"]) == 5 for ts in mon.finished)


def test_compat_submissions_are_not_pickled(tmp_path: Path) -> None:
    import pickle

    from farm.compat.convert import CompatSource

    with pytest.raises(TypeError, match="not resumable"):
        pickle.dumps(CompatSource(iter(()), "x"))


def test_malsami_offset_skips_sets_and_too_large_adds_nothing(tmp_path: Path) -> None:
    dist = _malsami(tmp_path)
    mon = OneArgMonitor()
    try:
        dist.add_job([malsami_test.exampleTest()], mon, 1)
        assert not dist.get_distributor_state()
        sets = [malsami_test.exampleTest() for _ in range(3)]
        dist.add_job(sets, mon, 2)
        wait_for("one set finished", lambda: len(mon.finished) == 1, timeout=60)
        assert mon.finished[0] is sets[2]
    finally:
        dist.close()


def test_malsami_kill_pauses_and_resume_continues(tmp_path: Path) -> None:
    dist = _malsami(tmp_path)
    mon = OneArgMonitor()
    try:
        dist.add_job([taskgen_like_endless()], LoggingMonitor())
        wait_for("a machine", lambda: bool(dist.farm.machines()), timeout=30)
        dist.kill_all_machines()
        assert not dist.farm.machines()
        dist.add_job([malsami_test.exampleTest()], mon)  # add_job un-pauses, as the original
        dist.kill_all_machines()
        dist.resume()
        wait_for("machines again", lambda: bool(dist.farm.machines()), timeout=30)
        assert dist.get_distributor_state()
    finally:
        dist.close()


def taskgen_like_endless() -> Any:
    """A MaLSAMi set running until stopped (numberofjobs 0)."""
    ts = malsami_test.exampleTest()
    for task in ts:
        task["numberofjobs"] = 0
        task["period"] = 10
    return ts


def test_taskgen_stop_wait_returns_promptly(tmp_path: Path) -> None:
    dist = TaskgenDistributor(**_farm(tmp_path))
    stopped: list[Any] = []
    started: list[Any] = []

    class Mon:
        def __taskset_start__(self, taskset: Any) -> None:
            started.append(taskset)

        def __taskset_stop__(self, taskset: Any) -> None:
            stopped.append(taskset)

    dist.event_handler = Mon()
    try:
        dist.start(taskgen_test.Problem0(), wait=False)  # numberofjobs 0: runs until stopped
        wait_for("the set to start", lambda: bool(started), timeout=30)
        time.sleep(0.2)
        t0 = time.monotonic()
        dist.stop(wait=True)
        assert time.monotonic() - t0 < 5
        wait_for("stop reported", lambda: len(stopped) == 1, timeout=5)
    finally:
        dist.close()
        assert dist.wait_closed(30)


def test_taskgen_event_handler_csv(tmp_path: Path) -> None:
    dist = TaskgenDistributor(**_farm(tmp_path))
    path = tmp_path / "events.csv"
    dist.event_handler = CsvHandler(str(path))
    try:
        dist.start(taskgen_example.Hey3TaskSet(), wait=True)
    finally:
        dist.close()
    text = path.read_text()
    assert "START" in text and "EXIT" in text


def test_taskgen_distributor_on_existing_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from farm.session import StdioSession

    monkeypatch.chdir(tmp_path)
    mon = OneArgMonitor()
    dist = TaskgenDistributor("127.0.0.1", 3001, session_class=StdioSession)
    dist.event_handler = mon
    try:
        assert dist.farm.backend_kind() == "hosts"
        dist.start(taskgen_example.Hey1TaskSet(), {"optimize": {"query_interval": 1000}})
    finally:
        dist.close()
    assert len(mon.finished) == 1 and next(iter(mon.finished[0])).jobs
    assert '"query_interval": 1000' in capsys.readouterr().out


def test_malsami_shut_down_finishes_the_running_set_then_pauses(tmp_path: Path) -> None:
    dist = _malsami(tmp_path)
    mon = OneArgMonitor()
    try:
        dist.add_job([malsami_test.exampleTest(), malsami_test.exampleTest()], mon)
        wait_for("a set started", lambda: bool(mon.started), timeout=30)
        dist.shut_down_all_machines()
        wait_for("machines shut down", lambda: not dist.farm.machines(), timeout=30)
        finished = len(mon.finished)
        assert finished in (1, 2)  # the running set ran to its end
        dist.resume()
        wait_for("both sets finished", lambda: len(mon.finished) == 2, timeout=30)
    finally:
        dist.close()
