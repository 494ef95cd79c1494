"""Testing my_experiment with farm.testing's fixtures (a pytest plugin: no imports needed)."""

from __future__ import annotations

from pathlib import Path

from my_experiment import ExitCounter, PeriodSweep

from farm.config import FarmConfig
from farm.monitors import FanoutMonitor


def test_every_variant_is_described() -> None:
    periods = [v.description()["tasks"][0]["period"] for v in PeriodSweep().variants()]
    assert periods == [100, 200, 300]


def test_monitor_sees_each_variant_finish_once_despite_a_crash(farm_fake, farm_recorder) -> None:
    counter = ExitCounter()
    farm_fake.add(PeriodSweep(), FanoutMonitor([counter, farm_recorder]), machines=2)
    farm_fake.crash(1)  # a guest dies mid-run: the farm replaces it and runs its set again
    assert farm_fake.wait(timeout=60)
    assert sorted(counter.finished) == [0, 1, 2]
    assert sorted(farm_recorder.finished) == [0, 1, 2]


def test_a_farm_that_cannot_boot_gives_up_on_nothing_it_can_run(farm_fake, farm_recorder) -> None:
    farm_fake.fail_boots = 2  # the first two boots fail; the farm retries
    farm_fake.add(PeriodSweep(), farm_recorder)
    assert farm_fake.wait(timeout=60)
    assert sorted(farm_recorder.finished) == [0, 1, 2]
    assert farm_recorder.bad == []


def test_real_jobs_on_agent_processes(farm_local, farm_recorder) -> None:
    counter = ExitCounter()
    farm_local.add_job(PeriodSweep(), FanoutMonitor([counter, farm_recorder]))
    farm_local.set_max_machine_value(1)
    assert farm_local.wait_finished(timeout=120)
    assert sorted(counter.finished) == [0, 1, 2]
    assert all(sum(c.values()) == 2 for c in counter.exits.values())  # two jobs, each exited
    assert "JOBS_DONE" in farm_recorder.event_types()


def test_the_farm_toml(farm_toml: Path, tmp_path: Path) -> None:
    config = FarmConfig.load(farm_toml)
    assert config.backend == "local"
    assert config.state_dir == tmp_path / "state"
