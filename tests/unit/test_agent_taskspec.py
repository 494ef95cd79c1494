"""Validation and defaults of the task dicts the agent receives."""

from __future__ import annotations

from typing import Any

import pytest

from farm.agent.taskspec import InvalidTaskSet, TaskSpec, parse_quota, parse_task, parse_taskset


def test_defaults() -> None:
    spec = parse_task({"id": 3, "pkg": "hey"}, 0)
    assert spec == TaskSpec(id=3, pkg="hey")
    assert (spec.priority, spec.period, spec.numberofjobs, spec.quota, spec.config) == (
        0, 0.0, 1, 0, {},
    )  # fmt: skip


def test_none_counts_as_missing_and_unknown_keys_are_ignored() -> None:
    raw = {"id": 1, "pkg": "pi", "config": None, "priority": None, "extra": [1, 2]}
    assert parse_task(raw, 0) == TaskSpec(id=1, pkg="pi")


def test_full_task() -> None:
    raw = {
        "id": 1, "pkg": "idle", "config": {"ms": 5}, "priority": 128, "period": 100,
        "executiontime": 10.5, "criticaltime": 0, "deadline": 80, "offset": 20,
        "numberofjobs": 4.0, "quota": "1M",
    }  # fmt: skip
    spec = parse_task(raw, 0)
    assert spec.numberofjobs == 4 and isinstance(spec.numberofjobs, int)
    assert spec.quota == 1 << 20
    assert spec.critical_ms == 80  # deadline stands in for a missing criticaltime
    assert spec.executiontime == 10.5


@pytest.mark.parametrize(
    ("change", "attribute"),
    [
        ({"id": -1}, "id"),
        ({"id": "1"}, "id"),
        ({"id": True}, "id"),
        ({"pkg": ""}, "pkg"),
        ({"pkg": "gcc"}, "pkg"),
        ({"pkg": 5}, "pkg"),
        ({"config": []}, "config"),
        ({"priority": 129}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"priority": False}, "priority"),
        ({"period": -5}, "period"),
        ({"period": float("nan")}, "period"),
        ({"period": float("inf")}, "period"),
        ({"offset": 10**30}, "offset"),
        ({"executiontime": "10"}, "executiontime"),
        ({"numberofjobs": -1}, "numberofjobs"),
        ({"quota": "lots"}, "quota"),
        ({"quota": -1}, "quota"),
        ({"pkg": "pi", "config": {"digits": 0}}, "config"),
        ({"pkg": "idle", "config": {"ms": "x"}}, "config"),
        ({"pkg": "shell", "config": {"command": "  "}}, "config.command"),
    ],
)
def test_invalid_attribute_is_named(change: dict[str, Any], attribute: str) -> None:
    raw = {"id": 9, "pkg": "hey", **change}
    with pytest.raises(InvalidTaskSet) as err:
        parse_task(raw, 2)
    assert err.value.attribute == attribute
    assert attribute.split(".")[0] in str(err.value)
    assert err.value.task in (9, "#2")


def test_uploaded_binaries_are_known_and_their_config_is_scalar() -> None:
    assert parse_task({"id": 0, "pkg": "tool", "config": {"a": 1}}, 0, {"tool"}).pkg == "tool"
    with pytest.raises(InvalidTaskSet, match=r"config\.a"):
        parse_task({"id": 0, "pkg": "tool", "config": {"a": [1]}}, 0, {"tool"})
    with pytest.raises(InvalidTaskSet, match=r"config\.args"):
        parse_task({"id": 0, "pkg": "tool", "config": {"args": "x"}}, 0, {"tool"})


def test_taskset_level_checks() -> None:
    assert [t.id for t in parse_taskset([{"id": 2, "pkg": "hey"}, {"id": 1, "pkg": "pi"}])] == [
        2, 1,
    ]  # fmt: skip
    bad: object
    for bad in (None, {}, [], "tasks"):
        with pytest.raises(InvalidTaskSet):
            parse_taskset(bad)
    with pytest.raises(InvalidTaskSet, match="duplicate"):
        parse_taskset([{"id": 1, "pkg": "hey"}, {"id": 1, "pkg": "pi"}])
    with pytest.raises(InvalidTaskSet, match="#1 is not an object"):
        parse_taskset([{"id": 1, "pkg": "hey"}, 7])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1M", 1 << 20), ("512K", 512 << 10), ("2G", 2 << 30), ("100", 100), ("1MiB", 1 << 20)],
)
def test_quota_strings(text: str, expected: int) -> None:
    assert parse_quota(0, text) == expected
