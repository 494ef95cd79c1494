"""Validation of task attributes: every error names the task, the attribute and the value."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from farm.agent import sched, taskspec
from farm.errors import ConfigError, TaskSetError
from farm.taskset import TaskSet


def _error(*tasks: dict[str, Any]) -> TaskSetError:
    ts = TaskSet(list(tasks))
    with pytest.raises(TaskSetError) as info:
        ts.validate()
    return info.value


def test_message_format_names_task_attribute_and_value() -> None:
    err = _error({"pkg": "hey"}, {"pkg": "hey", "period": -5})
    assert str(err) == "task 2: period must be a number >= 0, got -5"
    assert (err.task, err.attribute) == (2, "period")
    assert isinstance(err, ConfigError) and isinstance(err, ValueError)


@pytest.mark.parametrize(
    "attribute", ["period", "executiontime", "criticaltime", "deadline", "offset"]
)
@pytest.mark.parametrize("bad", [-1, -0.5, "10", None, True, math.nan, math.inf, {"a": 1}])
def test_times_must_be_numbers_at_least_zero(attribute: str, bad: object) -> None:
    err = _error({"pkg": "hey", attribute: bad})
    assert str(err) == f"task 1: {attribute} must be a number >= 0, got {bad!r}"
    assert err.attribute == attribute


@pytest.mark.parametrize(
    "attribute", ["period", "executiontime", "criticaltime", "deadline", "offset"]
)
@pytest.mark.parametrize("good", [0, 1, 2.5, 10**9])
def test_times_accept_numbers(attribute: str, good: object) -> None:
    TaskSet([{"pkg": "hey", attribute: good}]).validate()


@pytest.mark.parametrize("bad", [0, 129, -1, 2.5, 1.0, "3", True, False, None, 10**20])
def test_priority_must_be_int_1_to_128(bad: object) -> None:
    err = _error({"pkg": "hey"}, {"pkg": "hey", "priority": bad})
    assert str(err) == (
        "task 2: priority must be an int in 1..128"
        f" (1..127 fixed, 128 = EDF; leave it out for best effort), got {bad!r}"
    )
    assert (err.task, err.attribute) == (2, "priority")


@pytest.mark.parametrize("good", [1, 64, 127, 128])
def test_priority_accepts_1_to_128(good: int) -> None:
    TaskSet([{"pkg": "hey", "priority": good}]).validate()


def test_priority_zero_in_a_dimension_is_an_error() -> None:
    err = _error({"pkg": "hey", "priority": [10, 0]})
    assert str(err).endswith("got 0") and err.attribute == "priority"
    assert str(_error({"pkg": "hey", "priority": range(0, 5)})).endswith("got 0")
    TaskSet([{"pkg": "hey", "priority": range(1, 129)}]).validate()


def test_a_task_without_priority_is_valid_and_runs_best_effort() -> None:
    ts = TaskSet([{"pkg": "hey"}, {"pkg": "hey", "priority": 5}])
    ts.validate()
    described = ts.description()["tasks"]
    assert [t["priority"] for t in described] == [0, 5], "0 is the wire value for no priority"
    specs = taskspec.parse_taskset(described)  # the agent accepts it ...
    assert [s.priority for s in specs] == [0, 5]
    assert sched.plan(0, 0, 0, 0).policy == "other"  # ... and runs it SCHED_OTHER


@pytest.mark.parametrize("bad", [-1, 1.0, "3", True, None])
def test_numberofjobs_must_be_int_at_least_zero(bad: object) -> None:
    err = _error({"pkg": "hey", "numberofjobs": bad})
    assert str(err) == f"task 1: numberofjobs must be an int >= 0, got {bad!r}"


def test_numberofjobs_zero_is_allowed() -> None:
    TaskSet([{"pkg": "hey", "numberofjobs": 0}]).validate()


@pytest.mark.parametrize("bad", [-1, "1X", "", 1.5, None, True])
def test_bad_quota(bad: object) -> None:
    err = _error({"pkg": "hey", "quota": bad})
    assert str(err).startswith("task 1: quota must be bytes (int >= 0) or a size like '1M', got")
    assert err.attribute == "quota"


def test_pkg_is_required() -> None:
    assert str(_error({"priority": 1})) == "task 1: pkg is required"


@pytest.mark.parametrize("bad", [5, None, ["hey", 3]])
def test_pkg_must_be_a_string(bad: object) -> None:
    assert "pkg must be a string" in str(_error({"pkg": bad}))


def test_unknown_pkg() -> None:
    err = _error({"pkg": "nosuch"})
    assert str(err).startswith("task 1: pkg 'nosuch' is unknown")
    assert err.attribute == "pkg"


def test_shell_needs_a_command_string() -> None:
    assert "config['command']" in str(_error({"pkg": "shell"}))
    assert "config['command']" in str(_error({"pkg": "shell", "config": {"command": 5}}))
    assert "config['command']" in str(_error({"pkg": "shell", "config": {"command": "  "}}))
    TaskSet([{"pkg": "shell", "config": {"command": "true"}}]).validate()


def test_shell_in_a_pkg_dimension_needs_every_command_valid() -> None:
    err = _error({"pkg": ["hey", "shell"], "config": {"command": ["true", 7]}})
    assert err.attribute == "config['command']"
    TaskSet([{"pkg": ["hey", "shell"], "config": {"command": ["true", "echo"]}}]).validate()


@pytest.mark.parametrize("bad", [[{"a": 1}], "x", 5])
def test_config_must_be_a_dict(bad: object) -> None:
    err = _error({"pkg": "hey", "config": bad})
    assert str(err).startswith("task 1: config must be a dict, got")


def test_config_values_must_be_json() -> None:
    err = _error({"pkg": "pi", "config": {"digits": object()}})
    assert err.attribute == "config['digits']"
    err = _error({"pkg": "pi", "config": {"digits": math.nan}})
    assert "JSON" in str(err)
    err = _error({"pkg": "pi", "config": {1: 2}})
    assert "config keys must be strings" in str(err)


def test_unknown_attribute_with_hint() -> None:
    err = _error({"pkg": "hey", "perod": 5})
    assert str(err) == "task 1: unknown attribute 'perod' (did you mean 'period'?)"
    assert err.attribute == "perod"
    err = _error({"pkg": "hey", "colour": "red"})
    assert "annotations start with 'x-' or '_'" in str(err)


def test_annotations_are_allowed_and_not_described() -> None:
    ts = TaskSet([{"pkg": "hey", "x-owner": object(), "_note": "n"}])
    ts.validate()
    assert "x-owner" not in ts.description()["tasks"][0]


def test_annotation_dimension_repeats_a_set() -> None:
    ts = TaskSet([{"pkg": "hey", "x-run": range(3)}])
    assert ts.variant_count() == 3
    assert [v[0]["x-run"] for v in ts.variants()] == [0, 1, 2]
    assert [v.description() for v in ts.variants()] == [TaskSet([{"pkg": "hey"}]).description()] * 3


@pytest.mark.parametrize("bad", [-1, "1", 1.0, [1, 2], range(3)])
def test_bad_id(bad: object) -> None:
    err = _error({"pkg": "hey", "id": bad})
    assert "id must be an int >= 0" in str(err)
    assert str(err).startswith("task #1:"), "a task without a usable id is named by position"


def test_every_value_of_a_finite_dimension_is_checked() -> None:
    assert str(_error({"pkg": "hey", "period": [1, 2, -3]})).endswith("got -3")
    assert str(_error({"pkg": "hey", "priority": range(-1, 5)})).endswith("got -1")
    assert str(_error({"pkg": "hey", "priority": range(100, 200)})).endswith("got 199")
    assert str(_error({"pkg": "hey", "offset": {1, -2}})).endswith("got -2")
    assert str(_error({"pkg": "hey", "quota": ("1M", "bad")})).endswith("got 'bad'")
    assert str(_error({"pkg": "pi", "config": {"digits": [1, object()]}})).startswith(
        "task 1: config"
    )


def test_huge_ranges_validate_at_once() -> None:
    TaskSet([{"pkg": "hey", "period": range(10**12)}]).validate()


def test_empty_dimension_is_an_error() -> None:
    assert "without values" in str(_error({"pkg": "hey", "period": []}))
    assert "without values" in str(_error({"pkg": "pi", "config": {"digits": range(0)}}))


def test_empty_task_set_is_an_error() -> None:
    with pytest.raises(TaskSetError, match="no tasks"):
        TaskSet().validate()


def test_generator_values_are_checked_when_drawn() -> None:
    ts = TaskSet([{"pkg": "hey", "period": iter([1, 2, -7, 4])}])
    ts.validate()  # nothing drawn yet
    variants = ts.variants()
    assert [v.description()["tasks"][0]["period"] for v in itertools.islice(variants, 2)] == [1, 2]
    with pytest.raises(TaskSetError, match="task 1: period must be a number >= 0, got -7"):
        next(variants)


def test_variants_validates_the_template_first() -> None:
    ts = TaskSet([{"pkg": "hey", "period": [1, -1]}])
    with pytest.raises(TaskSetError, match="got -1"):
        ts.variants()


def test_drawn_pkg_is_checked_with_its_config() -> None:
    ts = TaskSet([{"pkg": iter(["hey", "shell"]), "config": {"command": ["true", ""]}}])
    variants = ts.variants()
    assert len(list(itertools.islice(variants, 2))) == 2  # hey with either command
    assert next(variants)[0]["config"]["command"] == "true"
    with pytest.raises(TaskSetError, match="config\\['command'\\]"):
        next(variants)


def test_finite_variants_are_valid_by_construction() -> None:
    ts = TaskSet([{"pkg": ["hey", "shell"], "config": {"command": ["true", "echo"]}}])
    assert [v.description()["tasks"][0]["pkg"] for v in ts.variants()] == ["hey"] * 2 + [
        "shell"
    ] * 2


@pytest.mark.parametrize(
    ("pkg", "config", "attribute"),
    [
        ("pi", {"digits": 0}, "config['digits']"),
        ("linpack", {"n": "big"}, "config['n']"),
        ("tumatmul", {"n": [10, 5000]}, "config['n']"),
        ("idle", {"ms": -1}, "config['ms']"),
        ("memhog", {"bytes": 1.5}, "config['bytes']"),
        ("cond_42", {"count": -1}, "config['count']"),
    ],
)
def test_builtin_workload_configs_use_the_agent_schema(
    pkg: str, config: dict[str, Any], attribute: str
) -> None:
    err = _error({"pkg": pkg, "config": config})
    assert err.attribute == attribute
    assert str(err).startswith(f"task 1: pkg {pkg!r}: config.")


def test_builtin_workload_configs_accept_agent_values() -> None:
    TaskSet(
        [
            {"pkg": "pi", "config": {"digits": range(1, 1000)}},
            {"pkg": "cond_mod", "config": {"arg1": 3, "count": 10}},
            {"pkg": ["pi", "linpack"], "config": {"n": 30, "digits": 50}},
            {"pkg": "hey", "config": {"anything": "goes"}},
        ]
    ).validate()
