"""Ready task sets in farm.tasksets, and lookup by name."""

from __future__ import annotations

import json
import pickle

import pytest

from farm import tasksets
from farm.agent import taskspec
from farm.errors import ConfigError
from farm.taskset import TaskSet
from farm.tasksets import example

NAMES = [name for name, _ in tasksets.available()]


def test_available_lists_examples_with_their_first_docstring_line() -> None:
    listed = dict(tasksets.available())
    assert listed["example.Hey0TaskSet"] == "One `hey` task, written as a plain dict: 1 variant."
    for name in (
        "example.Hey1TaskSet",
        "example.PiTaskSet",
        "example.PeriodicTaskSet",
        "example.VariantsTaskSet",
        "example.RandomTaskSet",
    ):
        assert listed[name]


@pytest.mark.parametrize("name", NAMES)
def test_every_task_set_runs_without_arguments_and_describes_its_variants(name: str) -> None:
    ts = tasksets.resolve(name)()
    ts.validate()
    count = ts.variant_count()
    assert count is not None and 1 <= count <= 10, "keep ready sets small"
    variants = list(ts.variants())
    assert len(variants) == count
    for variant in variants:
        desc = variant.description()
        assert json.loads(json.dumps(desc)) == desc
        taskspec.parse_taskset(desc["tasks"], variant.binaries())  # the agent accepts it
        for task in desc["tasks"]:
            assert task["numberofjobs"] >= 1, "ready sets must end on their own"
            assert task["period"] * task["numberofjobs"] + task["offset"] <= 1000
        assert variant.binaries() == {}
    clone = pickle.loads(pickle.dumps(ts))  # the journal stores templates
    assert [v.description() for v in clone.variants()] == [v.description() for v in variants]


def test_hey0_is_one_variant_one_hey_task() -> None:
    (variant,) = example.Hey0TaskSet().variants()
    (task,) = variant.description()["tasks"]
    assert task["pkg"] == "hey" and task["id"] == 1


def test_hey1_has_a_few_variants() -> None:
    assert 2 <= (example.Hey1TaskSet().variant_count() or 0) <= 5


def test_random_task_set_seeding() -> None:
    def desc(ts: TaskSet) -> list[object]:
        return [v.description() for v in ts.variants()]

    assert desc(example.RandomTaskSet(seed=5)) == desc(example.RandomTaskSet(seed=5))
    assert any(
        desc(example.RandomTaskSet(seed=s)) != desc(example.RandomTaskSet(5)) for s in range(6, 9)
    )


@pytest.mark.parametrize(
    "name",
    ["example.Hey0TaskSet", "Hey0TaskSet", "farm.tasksets.example:Hey0TaskSet"],
)
def test_resolve_forms(name: str) -> None:
    assert tasksets.resolve(name) is example.Hey0TaskSet


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"example\.Hey0TaskSet"):
        tasksets.resolve("example.Hey0TaskSeet")
    with pytest.raises(ConfigError, match="unknown task set"):
        tasksets.resolve("nothing.Like.This")


def test_module_colon_class_errors() -> None:
    with pytest.raises(ConfigError, match="not found"):
        tasksets.resolve("farm.tasksets.example:Nope")
    with pytest.raises(ConfigError, match="not found"):
        tasksets.resolve("no_such_module_xyz:Cls")
    with pytest.raises(ConfigError, match="not a TaskSet class"):
        tasksets.resolve("farm.taskset:Task")
