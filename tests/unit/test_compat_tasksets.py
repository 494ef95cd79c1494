"""farm.compat: the taskgen forks' blocks and every example task set, on the fake backend."""

from __future__ import annotations

import inspect
import random
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from farm.backend.fake import FakeBackend, session_class_for
from farm.compat.convert import CompatSource, farm_task
from farm.compat.malsami.taskgen import blocks as mblocks
from farm.compat.malsami.taskgen.task import Task as MTask
from farm.compat.taskgen import blocks as tblocks
from farm.compat.taskgen.distributor import Distributor
from farm.compat.taskgen.monitor import AbstractMonitor
from farm.compat.taskgen.taskset import BlockTaskSet, TaskSet
from farm.config import FarmConfig
from tests.data.compat import malsami_test, taskgen_example, taskgen_nextgen, taskgen_test


def _classes(module: ModuleType) -> dict[str, type]:
    found = {
        name: cls
        for name, cls in vars(module).items()
        if inspect.isclass(cls)
        and issubclass(cls, TaskSet)
        and cls not in (TaskSet, BlockTaskSet)
        and not name.startswith("_")
    }
    for extra in ("PERIOD", "PRIORITY"):
        found.update(getattr(module, extra, {}))
    return found


EXAMPLES = {
    f"{m.__name__.rsplit('.', 1)[1]}.{name}": cls
    for m in (taskgen_example, taskgen_test, taskgen_nextgen)
    for name, cls in _classes(m).items()
}


def test_every_example_class_is_listed() -> None:
    assert len(EXAMPLES) == 62


def test_taskgen_block_signatures() -> None:
    assert tblocks.pi.Variants(10)["config"]["arg1"] == range(10)
    random.seed(3)
    draws = {tblocks.pi.Random(3)["config"]["arg1"] for _ in range(200)}
    assert draws == {1, 2, 3}  # taskgen: 1..n
    mix = tblocks.binaries.RandomList(5, 7)
    assert len(mix) == 5
    assert all(
        b["pkg"] in {"hey", "cond_42", "cond_mod", "idle", "pi", "linpack", "tumatmul"} for b in mix
    )
    assert tblocks.critical.Highdict["criticaltime"] == range(1, 5)
    assert tblocks.critical.Lowdict is tblocks.critical.Low
    assert tblocks.cond_42.Break()["pkg"] == "cond_42"


def test_taskgen_ids_from_zero_and_variants_in_order() -> None:
    ts = taskgen_example.Hey6TaskSet()
    assert [t.id for t in ts] == [0]
    prios = [v_task["priority"] for v in ts.variants() for v_task in v]
    assert prios == list(range(1, 128))
    assert [t.id for t in taskgen_example.Hey8TaskSet()] == list(range(10))
    assert len(list(taskgen_example.Hey4TaskSet())) == 4


def test_taskgen_instances_do_not_share_tasks() -> None:
    assert len(list(taskgen_example.Hey8TaskSet())) == len(list(taskgen_example.Hey8TaskSet()))


def test_seeded_block_sets_repeat() -> None:
    first = [dict(t) for t in taskgen_nextgen.Repeatable10()]
    again = [dict(t) for t in taskgen_nextgen.Repeatable10()]
    assert first == again


def test_malsami_blocks_and_defaults() -> None:
    assert mblocks.quota.Value(5) == {"quota": "5M"}
    assert mblocks.caps.Value(50) == {"caps": 50}
    assert mblocks.pi.Variants(5)["config"]["arg1"] == range(1, 5)
    task = MTask(mblocks.hey.Value(1))
    assert task["caps"] == 0 and task["cores"] == 2 and task["coreoffset"] == 1
    assert task["jobs"] == {} and task["priority"] == 128 and task["offset"] == 0
    assert len(mblocks.binaries.RandomList(4, 3)) == 4
    converted = farm_task(MTask(mblocks.hey.Value(1), mblocks.caps.Value(50), {"id": 0}))
    assert converted["x-caps"] == 50 and "jobs" not in converted


def test_malsami_test_sets_variants() -> None:
    plain = malsami_test.exampleTest()
    assert [t.id for t in plain] == [0, 1, 2, 3, 4]
    assert [v for v in plain.variants()] == [plain]
    assert sum(1 for _ in malsami_test.example5().variants()) == 4**4
    variant = next(iter(CompatSource(plain.variants(), "m").variants()))
    tasks = variant.description()["tasks"]
    assert tasks[0]["priority"] == 1  # Taskloader 0 (its lowest) -> farm 1 (the lowest)
    assert tasks[0]["quota"] == 5 << 20 and tasks[0]["numberofjobs"] == 5


class _Collect(AbstractMonitor):
    def __init__(self) -> None:
        self.finished: list[Any] = []
        self.stopped: list[Any] = []

    def __taskset_finish__(self, taskset: Any) -> None:
        self.finished.append(taskset)

    def __taskset_stop__(self, taskset: Any) -> None:
        self.stopped.append(taskset)


#: the example sets with more than one variant, and how many (the others have one)
VARIANT_COUNTS = {
    "taskgen_example.Hey6TaskSet": 127,
    "taskgen_example.Hey7TaskSet": 127**2,
    "taskgen_nextgen.NextHey6TaskSet": 127,
    "taskgen_nextgen.NextHey7TaskSet": 127**2,
    "taskgen_nextgen.Variants10": 10,
    "taskgen_nextgen.Variants100": 100,
    "taskgen_nextgen.Variants1m": 10**6,
    "taskgen_nextgen.ThreeVariants100": 100**3,
}
#: iterated whole in tests/process/test_compat_all_variants.py (1-2 minutes of CPU each)
HUGE = frozenset(k for k, n in VARIANT_COUNTS.items() if n >= 10**6)
#: end to end here: every variant of a set of at most ALL_UP_TO, else the first, the last
#: and every STRIDE-th; of a HUGE set its first HUGE_FIRST (reaching the others costs seconds)
ALL_UP_TO, STRIDE, HUGE_FIRST = 128, 2000, 3


def sample_indices(name: str) -> list[int]:
    """The variants of example set ``name`` run end to end on the fake backend here."""
    count = VARIANT_COUNTS.get(name, 1)
    if name in HUGE:
        return list(range(HUGE_FIRST))
    if count <= ALL_UP_TO:
        return list(range(count))
    return sorted({*range(0, count, STRIDE), count - 1})


class _Pick:
    """The variants of a set at the given indices (in order), as a task set taskgen can start."""

    def __init__(self, taskset: Any, indices: list[int]) -> None:
        self.taskset = taskset
        self.indices = indices

    def variants(self) -> Iterator[Any]:
        wanted = iter(self.indices)
        target = next(wanted, None)
        for index, variant in enumerate(self.taskset.variants()):
            if index == target:
                yield variant
                target = next(wanted, None)
                if target is None:
                    return


def _distributor(tmp_path: Path, **cfg: Any) -> Distributor:
    backend = FakeBackend()
    config = FarmConfig(
        state_dir=tmp_path / "state",
        log_dir=tmp_path / "log",
        idle_linger=0.05,
        heartbeat_timeout=2.0,
        **cfg,
    )
    return Distributor(config=config, backend=backend, session_class=session_class_for(backend))


def test_every_variant_converts_to_valid_farm_sets() -> None:
    """Every variant of every example set but the HUGE: generated, converted, validated."""
    sets = {name: cls() for name, cls in EXAMPLES.items() if name not in HUGE}
    sets["malsami_test.exampleTest"] = malsami_test.exampleTest()
    sets["malsami_test.example5"] = malsami_test.example5()
    counts = {**VARIANT_COUNTS, "malsami_test.example5": 4**4}
    for name, taskset in sets.items():
        ids = [t["id"] for t in taskset]
        n = 0
        for n, variant in enumerate(CompatSource(taskset.variants(), name).variants(), 1):
            assert variant.index == n - 1
            assert [t["id"] for t in variant.description()["tasks"]] == ids, name
        assert n == counts.get(name, 1), name


def test_every_example_runs_on_the_fake_backend(tmp_path: Path) -> None:
    """A stated sample of every example set's variants end to end (see sample_indices)."""
    dist = _distributor(tmp_path, set_time_limit=0.3, max_machines=2)
    mon = _Collect()
    dist.event_handler = mon
    expected = 0
    try:
        for name, cls in EXAMPLES.items():
            picks = sample_indices(name)
            expected += len(picks)
            dist.start(_Pick(cls(), picks), wait=False)
        assert dist.wait_finished(timeout=300)
    finally:
        dist.close()
    assert expected > 400 and len(mon.finished) == expected
    for taskset in mon.finished:  # the 1k/10k-task sets reach the time limit before all start
        tasks = list(taskset)
        started = [t for t in tasks if t.jobs]
        assert started, f"a set of {len(tasks)} tasks has no job records"
        if len(tasks) <= 100:
            assert len(started) == len(tasks), f"a set of {len(tasks)} tasks: some never started"
        assert all(j.start_date is not None for t in started for j in t.jobs)
