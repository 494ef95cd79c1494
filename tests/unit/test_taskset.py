"""Task, TaskSet and BlockTaskSet: blocks, ids, description, binaries, job records."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest

from farm.core.submission import submission_key
from farm.errors import ConfigError, TaskSetError
from farm.events import Event, EventType
from farm.taskset import (
    ATTRIBUTES,
    DEFAULTS,
    BlockTaskSet,
    JobRecord,
    Task,
    TaskSet,
    parse_quota,
)

HEY = {"pkg": "hey"}


# -- Task and blocks -----------------------------------------------------------------------------
def test_task_merges_blocks_in_order_and_config_key_by_key() -> None:
    a = {"pkg": "pi", "priority": 5, "config": {"digits": 10, "x": 1}}
    b = {"priority": 7, "config": {"digits": 20}}
    task = Task(a, b)
    assert task == {"pkg": "pi", "priority": 7, "config": {"digits": 20, "x": 1}}
    assert isinstance(task, dict)
    assert a["config"] == {"digits": 10, "x": 1}, "blocks are never mutated"


def test_task_copies_config_so_blocks_stay_untouched() -> None:
    block = {"pkg": "pi", "config": {"digits": 1}}
    task = Task(block)
    task["config"]["digits"] = 99
    assert block["config"]["digits"] == 1


def test_task_rejects_non_block() -> None:
    with pytest.raises(TaskSetError, match="a block must be a dict or a callable"):
        Task(42)  # type: ignore[arg-type]


def test_callable_blocks_wait_for_the_task_set_rng() -> None:
    seen: list[random.Random] = []

    def block(rng: random.Random) -> dict[str, int]:
        seen.append(rng)
        return {"priority": rng.randint(1, 127)}

    task = Task(HEY, block)
    assert task.pending and "priority" not in task and not seen
    ts = TaskSet(seed=3)
    stored = ts.append(task)
    assert seen == [ts.rng]
    assert not stored.pending and stored["priority"] == random.Random(3).randint(1, 127)


def test_callable_without_parameters_and_nested_callables() -> None:
    def factory() -> object:  # taskgen style: an uncalled factory returning a random block
        return lambda rng: {"period": rng.choice([5, 6])}

    ts = TaskSet([Task(HEY, lambda: {"priority": 9}, factory)], seed=1)
    assert ts[0]["priority"] == 9 and ts[0]["period"] in (5, 6)


def test_callable_block_keeps_its_place_in_block_order() -> None:
    draw = lambda rng: {"priority": 100, "quota": "1M"}  # noqa: E731
    ts = TaskSet([Task(HEY, draw, {"quota": "2M"}), Task(HEY, {"priority": 1}, draw)])
    assert ts[0]["quota"] == "2M" and ts[0]["priority"] == 100
    assert ts[1]["priority"] == 100


def test_direct_edits_of_an_unbound_task_win_over_callable_blocks() -> None:
    task = Task(HEY, lambda rng: {"priority": 3, "period": 4, "config": {"a": 1, "b": 2}})
    task["priority"] = 50
    task["config"] = {"c": 3}
    stored = TaskSet([task]).tasks[0]
    assert stored["priority"] == 50 and stored["period"] == 4
    assert stored["config"] == {"c": 3}


def test_config_edit_in_place_of_an_unbound_task_is_kept() -> None:
    task = Task(HEY, {"config": {"a": 1}}, lambda rng: {"config": {"b": 2}})
    task["config"]["a"] = 10
    del task["pkg"]
    task["pkg"] = "pi"
    assert TaskSet([task])[0]["config"] == {"a": 10, "b": 2}


def test_callable_block_must_return_a_dict() -> None:
    with pytest.raises(TaskSetError, match="not a dict"):
        TaskSet([Task(HEY, lambda rng: 5)])


def test_task_id_property() -> None:
    task = Task(HEY)
    assert task.id is None
    task.id = 4
    assert task["id"] == 4


# -- ids ---------------------------------------------------------------------------------------
def test_ids_are_assigned_one_to_n() -> None:
    ts = TaskSet([HEY, HEY, HEY])
    assert [t["id"] for t in ts] == [1, 2, 3]


def test_auto_ids_skip_explicit_ones() -> None:
    ts = TaskSet([{"pkg": "hey", "id": 5}, HEY])
    assert [t.id for t in ts] == [5, 6]


def test_duplicate_explicit_ids_are_an_error() -> None:
    with pytest.raises(TaskSetError, match="task 1: duplicate id 1"):
        TaskSet([{"pkg": "hey", "id": 1}, {"pkg": "hey", "id": 1}])


def test_duplicate_id_made_after_append_is_caught_by_validate() -> None:
    ts = TaskSet([HEY, HEY])
    ts[1]["id"] = 1
    with pytest.raises(TaskSetError, match="duplicate id 1"):
        ts.validate()


def test_append_copies_and_returns_the_stored_task() -> None:
    task = Task(HEY)
    ts = TaskSet()
    stored = ts.append(task)
    stored2 = ts.append(task)
    assert stored is not task and "id" not in task
    assert (stored.id, stored2.id) == (1, 2)


def test_no_shared_default_between_task_sets() -> None:
    a, b = TaskSet(), TaskSet()
    a.append(HEY)
    assert len(a) == 1 and len(b) == 0


def test_append_rejects_non_dict() -> None:
    with pytest.raises(TaskSetError, match="a task must be a dict"):
        TaskSet().append("hey")  # type: ignore[arg-type]


def test_iteration_len_getitem_tasks() -> None:
    ts = TaskSet([HEY, {"pkg": "pi"}])
    assert len(ts) == 2
    assert [t["pkg"] for t in ts] == ["hey", "pi"]
    assert ts[1]["pkg"] == "pi" and ts.tasks == (ts[0], ts[1])


# -- description -------------------------------------------------------------------------------
def test_description_fills_defaults_and_normalises_quota() -> None:
    ts = TaskSet([{"pkg": "hey", "quota": "1M", "x-note": "mine"}, {"pkg": "pi", "quota": 7}])
    desc = ts.description()
    assert json.loads(json.dumps(desc)) == desc
    first = desc["tasks"][0]
    assert list(first) == [a for a in ATTRIBUTES if a != "caps"]  # caps only when given
    assert first == {"id": 1, "pkg": "hey", "config": {}, **DEFAULTS, "quota": 1 << 20}
    assert desc["tasks"][1]["quota"] == 7


def test_defaults() -> None:
    assert DEFAULTS == {
        "priority": 0,
        "period": 0,
        "executiontime": 0,
        "criticaltime": 0,
        "deadline": 0,
        "offset": 0,
        "numberofjobs": 1,
        "quota": 0,
    }


def test_description_of_a_template_is_an_error() -> None:
    with pytest.raises(TaskSetError, match="has dimensions"):
        TaskSet([{"pkg": "hey", "period": [1, 2]}]).description()


def test_description_of_an_invalid_set_is_an_error() -> None:
    ts = TaskSet([{"pkg": "hey", "period": -1}])
    with pytest.raises(TaskSetError, match="period"):
        ts.description()


def test_description_config_is_plain_and_independent() -> None:
    ts = TaskSet([{"pkg": "pi", "config": {"digits": 5, "nested": {"t": (1, 2)}}}])
    desc = ts.description()
    assert desc["tasks"][0]["config"] == {"digits": 5, "nested": {"t": [1, 2]}}
    desc["tasks"][0]["config"]["digits"] = 6
    assert ts[0]["config"]["digits"] == 5


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1M", 1 << 20),
        ("512K", 512 << 10),
        ("2G", 2 << 30),
        ("1m", 1 << 20),
        ("4MiB", 4 << 20),
        ("1.5K", 1536),
        ("100", 100),
        ("100B", 100),
        ("2kb", 2048),
        (0, 0),
        (4096, 4096),
    ],
)
def test_parse_quota(text: str | int, size: int) -> None:
    assert parse_quota(text) == size


@pytest.mark.parametrize("bad", ["", "M", "1X", "-1M", -1, 1.5, True, None, "1 M B", "1ib", "1MBB"])
def test_parse_quota_rejects(bad: object) -> None:
    with pytest.raises(ConfigError, match="quota must be"):
        parse_quota(bad)


# -- binaries ----------------------------------------------------------------------------------
@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "mybin"
    path.write_bytes(b"\x7fELF")
    return path


def test_binaries_of_pkgs_that_use_them(binary: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_bytes(b"x")
    ts = TaskSet([{"pkg": "mybin"}, HEY], binaries={"mybin": str(binary), "unused": other})
    assert ts.binaries() == {"mybin": binary.resolve()}
    assert all(isinstance(p, Path) for p in ts.binaries().values())


def test_add_binary_then_use_it(binary: Path) -> None:
    ts = TaskSet()
    ts.add_binary("mybin", binary)
    ts.append({"pkg": "mybin"})
    ts.validate()
    assert ts.binaries() == {"mybin": binary.resolve()}
    assert ts.description()["tasks"][0]["pkg"] == "mybin"


def test_binary_in_pkg_dimension_is_needed(binary: Path) -> None:
    ts = TaskSet([{"pkg": ["hey", "mybin"]}], binaries={"mybin": binary})
    assert set(ts.binaries()) == {"mybin"}
    assert [v.binaries() for v in ts.variants()] == [{}, {"mybin": binary.resolve()}]


def test_missing_binary_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        TaskSet(binaries={"ghost": tmp_path / "nope"})


def test_binary_vanishing_later_is_an_error(binary: Path) -> None:
    ts = TaskSet([{"pkg": "mybin"}], binaries={"mybin": binary})
    binary.unlink()
    with pytest.raises(ConfigError, match="gone"):
        ts.binaries()


@pytest.mark.parametrize("name", ["hey", "shell", "", "a b", "../x", ".hidden"])
def test_bad_binary_names(name: str, binary: Path) -> None:
    with pytest.raises(ConfigError, match="binary name"):
        TaskSet().add_binary(name, binary)


# -- BlockTaskSet ------------------------------------------------------------------------------
def test_block_task_set_combines_alternatives_taskgen_style() -> None:
    ts = BlockTaskSet(
        [{"pkg": "hey"}, {"pkg": "pi"}], {"priority": 5}, [{"period": 1}, {"period": 2}]
    )
    assert [(t["pkg"], t["priority"], t["period"], t["id"]) for t in ts] == [
        ("hey", 5, 1, 1),
        ("hey", 5, 2, 2),
        ("pi", 5, 1, 3),
        ("pi", 5, 2, 4),
    ]


def test_block_task_set_from_tasks() -> None:
    ts = BlockTaskSet(Task(HEY), Task({"pkg": "pi"}))
    assert [t["pkg"] for t in ts] == ["hey", "pi"]


def test_block_task_set_rejects_tasks_mixed_with_blocks() -> None:
    with pytest.raises(ConfigError, match="not both"):
        BlockTaskSet(Task(HEY), {"priority": 1})


def _random_set(seed: int | None) -> BlockTaskSet:
    return BlockTaskSet(
        [HEY, HEY, HEY],
        lambda rng: {"priority": rng.randint(1, 127)},
        lambda rng: {"period": [rng.randint(1, 100) for _ in range(3)]},
        seed=seed,
    )


def _descriptions(ts: TaskSet) -> list[dict[str, object]]:
    return [v.description() for v in ts.variants()]


def test_block_task_set_same_seed_same_variants_whatever_the_global_rng() -> None:
    random.seed(1)
    first = _descriptions(_random_set(42))
    random.seed(2)
    random.random()
    second = _descriptions(_random_set(42))
    assert first == second and len(first) == 27
    assert _descriptions(_random_set(43)) != first


def test_block_task_set_never_touches_the_global_rng() -> None:
    random.seed(7)
    state = random.getstate()
    _descriptions(_random_set(None))
    _descriptions(_random_set(5))
    assert random.getstate() == state


def test_variants_repeat_exactly_on_a_second_pass() -> None:
    ts = _random_set(None)
    assert _descriptions(ts) == _descriptions(ts)


def test_template_pickles_and_keeps_its_draws() -> None:
    ts = _random_set(None)
    clone = pickle.loads(pickle.dumps(ts))
    assert _descriptions(clone) == _descriptions(ts)
    ts.record(Event(1, 0, EventType.START, 1.0))
    assert pickle.loads(pickle.dumps(ts)).jobs(1)[0].start == 1.0


def test_pickles_and_submission_keys_name_the_package_not_its_modules() -> None:
    """Journals written before farm.taskset became a package still load and resume."""
    ts = BlockTaskSet({"pkg": "hey"})
    ts.record(Event(1, 0, EventType.START, 1.0))
    blob = pickle.dumps([ts, TaskSet([HEY])], protocol=0)  # protocol 0 spells out names
    for cls in (Task, TaskSet, BlockTaskSet, JobRecord):
        assert cls.__module__ == "farm.taskset"
        assert f"cfarm.taskset\n{cls.__name__}\n".encode() in blob
    assert b"farm.taskset." not in blob
    assert submission_key(TaskSet([HEY])).startswith("farm.taskset.TaskSet:")


def test_package_exports() -> None:
    import farm.taskset

    assert set(farm.taskset.__all__) == {
        "ATTRIBUTES",
        "DEFAULTS",
        "EDF_PRIORITY",
        "Block",
        "BlockTaskSet",
        "JobRecord",
        "Task",
        "TaskSet",
        "is_dimension",
        "parse_quota",
    }
    assert all(hasattr(farm.taskset, name) for name in farm.taskset.__all__)


# -- job records -------------------------------------------------------------------------------
def _ev(task: int, job: int | None, kind: EventType, ts: float, detail: str | None = None) -> Event:
    return Event(task_id=task, job=job, type=kind, timestamp=ts, detail=detail)


def test_record_start_and_exit_make_job_records() -> None:
    (variant,) = TaskSet([HEY, HEY]).variants()
    variant.record(_ev(1, 0, EventType.START, 1.0))
    variant.record(_ev(1, 1, EventType.START, 2.0))
    rec = variant.record(_ev(1, 0, EventType.EXIT_CRITICAL, 1.5, "late"))
    assert rec == JobRecord(0, 1.0, 1.5, EventType.EXIT_CRITICAL, "late")
    assert variant.jobs(1) == [rec, JobRecord(1, 2.0)]
    assert variant.jobs(2) == []
    assert rec.to_dict() == {
        "job": 0,
        "start": 1.0,
        "end": 1.5,
        "exit_type": "EXIT_CRITICAL",
        "detail": "late",
    }


def test_exit_without_start_is_recorded() -> None:
    ts = TaskSet([HEY])
    ts.record(_ev(1, 3, EventType.NOT_SCHEDULED, 4.0))
    assert ts.jobs(1) == [JobRecord(3, None, 4.0, EventType.NOT_SCHEDULED)]


def test_all_done_needs_jobs_done_from_every_task() -> None:
    ts = TaskSet([HEY, HEY])
    assert not ts.all_done
    ts.record(_ev(1, None, EventType.JOBS_DONE, 1.0))
    assert not ts.all_done
    ts.record(_ev(2, None, EventType.NOTICE, 1.0, "fallback"))
    ts.record(_ev(2, None, EventType.JOBS_DONE, 2.0))
    assert ts.all_done
    assert not TaskSet().all_done


def test_reset_jobs_forgets_everything() -> None:
    ts = TaskSet([HEY])
    ts.record(_ev(1, 0, EventType.START, 1.0))
    ts.record(_ev(1, None, EventType.JOBS_DONE, 2.0))
    ts.reset_jobs()
    assert ts.jobs(1) == [] and not ts.all_done


def test_events_for_unknown_tasks_or_without_job_are_ignored() -> None:
    ts = TaskSet([HEY])
    assert ts.record(_ev(9, 0, EventType.START, 1.0)) is None
    assert ts.record(_ev(1, None, EventType.EXIT, 1.0)) is None
    assert ts.jobs(1) == []


def test_jobs_of_unknown_task_is_an_error() -> None:
    with pytest.raises(TaskSetError, match="no task 9"):
        TaskSet([HEY]).jobs(9)


def test_variants_carry_their_own_jobs() -> None:
    ts = TaskSet([{"pkg": "hey", "period": [1, 2]}])
    first, second = ts.variants()
    first.record(_ev(1, 0, EventType.START, 1.0))
    assert first.jobs(1) and not second.jobs(1)


def test_set_wide_notice_is_info_not_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    ts = TaskSet([HEY])
    with caplog.at_level("INFO", logger="farm.taskset"):
        assert ts.record(_ev(-1, None, EventType.NOTICE, 1.0, "built-ins run as Python")) is None
        ts.record(_ev(7, 0, EventType.START, 1.0))  # an unknown task still warns
    levels = [(r.levelname, "Python" in r.getMessage()) for r in caplog.records]
    assert levels == [("INFO", True), ("WARNING", False)]
