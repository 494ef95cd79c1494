"""Dimensions of variation and the variant odometer."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from farm.errors import TaskSetError
from farm.taskset import TaskSet, is_dimension


def _values(ts: TaskSet, *paths: tuple[int, str] | tuple[int, str, str]) -> list[tuple[Any, ...]]:
    """For each variant, the values at ``(task position, key[, config key])``."""
    out = []
    for variant in ts.variants():
        row = []
        for path in paths:
            value: Any = variant[path[0]][path[1]]
            row.append(value[path[2]] if len(path) == 3 else value)
        out.append(tuple(row))
    return out


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, 2], True),
        ((1, 2), True),
        (range(3), True),
        ({1, 2}, True),
        (frozenset({1}), True),
        (iter([1]), True),
        ((x for x in [1]), True),
        ({1: 2}.keys(), True),
        ("abc", False),
        (b"abc", False),
        ({"a": 1}, False),
        (5, False),
        (None, False),
    ],
)
def test_is_dimension(value: object, expected: bool) -> None:
    assert is_dimension(value) is expected


def test_scalar_set_has_one_variant_that_is_a_copy() -> None:
    ts = TaskSet([{"pkg": "hey", "config": {}}])
    assert ts.variant_count() == 1 and ts.is_concrete()
    (variant,) = ts.variants()
    assert variant.index == 0 and variant.is_concrete()
    assert variant[0] == ts[0] and variant[0] is not ts[0]
    assert variant[0]["config"] is not ts[0]["config"]
    assert ts.index is None


def test_product_order_last_dimension_fastest() -> None:
    ts = TaskSet(
        [{"pkg": "hey", "period": [1, 2], "priority": range(5, 8)}, {"pkg": "pi", "offset": (0, 9)}]
    )
    assert ts.variant_count() == 12
    got = _values(ts, (0, "period"), (0, "priority"), (1, "offset"))
    assert got == list(itertools.product([1, 2], range(5, 8), (0, 9)))
    assert [v.index for v in ts.variants()] == list(range(12))


def test_order_is_deterministic_across_passes_and_instances() -> None:
    def make() -> TaskSet:
        return TaskSet([{"pkg": "hey", "period": [3, 1, 2], "quota": {"2M", "1M", "512K"}}])

    first = [v.description() for v in make().variants()]
    assert first == [v.description() for v in make().variants()]
    ts = make()
    assert [v.description() for v in ts.variants()] == [v.description() for v in ts.variants()]


def test_sets_vary_in_sorted_order() -> None:
    ts = TaskSet([{"pkg": "hey", "period": {30, 10, 20}}, {"pkg": "pi", "quota": {"2M", "1M"}}])
    assert _values(ts, (0, "period"), (1, "quota")) == [
        (10, "1M"),
        (10, "2M"),
        (20, "1M"),
        (20, "2M"),
        (30, "1M"),
        (30, "2M"),
    ]


def test_strings_are_scalars() -> None:
    ts = TaskSet([{"pkg": "shell", "config": {"command": "echo hi"}, "quota": "1M"}])
    assert ts.variant_count() == 1
    (variant,) = ts.variants()
    assert variant[0]["config"]["command"] == "echo hi" and variant[0]["quota"] == "1M"


def test_nested_config_values_are_dimensions() -> None:
    ts = TaskSet(
        [
            {
                "pkg": "pi",
                "config": {"digits": [10, 20], "fixed": "x", "d": {"k": 1}},
                "period": (1, 2),
            }
        ]
    )
    assert ts.variant_count() == 4
    got = [v[0]["config"] for v in ts.variants()]
    assert got == [
        {"digits": 10, "fixed": "x", "d": {"k": 1}},
        {"digits": 10, "fixed": "x", "d": {"k": 1}},
        {"digits": 20, "fixed": "x", "d": {"k": 1}},
        {"digits": 20, "fixed": "x", "d": {"k": 1}},
    ]
    assert _values(ts, (0, "config", "digits"), (0, "period")) == [
        (10, 1),
        (10, 2),
        (20, 1),
        (20, 2),
    ]


def test_pkg_dimension() -> None:
    ts = TaskSet([{"pkg": ["hey", "namaste"]}])
    assert [v.description()["tasks"][0]["pkg"] for v in ts.variants()] == ["hey", "namaste"]


def test_empty_dimension_counts_zero() -> None:
    assert TaskSet([{"pkg": "hey", "period": []}]).variant_count() == 0
    assert TaskSet([{"pkg": "hey", "period": [], "offset": iter([1])}]).variant_count() == 0


def test_generator_dimension_is_slowest_and_consumed_once() -> None:
    pulled: list[int] = []

    def gen() -> Iterator[int]:
        for value in (100, 200):
            pulled.append(value)
            yield value

    ts = TaskSet([{"pkg": "hey", "priority": [1, 2], "period": gen()}])
    assert ts.variant_count() is None
    assert _values(ts, (0, "period"), (0, "priority")) == [(100, 1), (100, 2), (200, 1), (200, 2)]
    assert pulled == [100, 200]


def test_generators_cannot_be_enumerated_twice() -> None:
    ts = TaskSet([{"pkg": "hey", "period": iter([1, 2])}])
    list(ts.variants())
    with pytest.raises(TaskSetError, match="used up"):
        ts.variants()


def test_several_generators_replay_the_inner_ones() -> None:
    outer = (p for p in (1, 2, 3))
    inner = (o for o in (10, 20))
    ts = TaskSet([{"pkg": "hey", "period": outer, "offset": inner, "priority": [5, 6]}])
    got = _values(ts, (0, "period"), (0, "offset"), (0, "priority"))
    assert got == list(itertools.product((1, 2, 3), (10, 20), (5, 6)))


def test_infinite_generator_streams() -> None:
    ts = TaskSet([{"pkg": "hey", "period": itertools.count(1), "priority": [1, 2]}])
    head = list(itertools.islice(ts.variants(), 10_000))
    assert [v.index for v in head] == list(range(10_000))
    assert [(v[0]["period"], v[0]["priority"]) for v in head[:4]] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert head[-1][0]["period"] == 5000


def test_reiterable_iterable_is_restarted() -> None:
    class Periods:
        def __iter__(self) -> Iterator[int]:
            return iter([7, 8])

    ts = TaskSet([{"pkg": "hey", "period": Periods(), "priority": [1, 2]}])
    assert ts.variant_count() is None
    assert _values(ts, (0, "period"), (0, "priority")) == [(7, 1), (7, 2), (8, 1), (8, 2)]


def test_variant_count_product() -> None:
    ts = TaskSet(
        [
            {"pkg": "hey", "period": range(1000)},
            {"pkg": "hey", "offset": range(1000)},
            {"pkg": "pi", "config": {"digits": range(1000)}},
        ]
    )
    assert ts.variant_count() == 10**9


def test_variants_do_not_share_mutable_state() -> None:
    ts = TaskSet([{"pkg": "pi", "config": {"digits": [1, 2]}}])
    a, b = ts.variants()
    a[0]["config"]["digits"] = 99
    assert b[0]["config"]["digits"] == 2 and ts[0]["config"]["digits"] == [1, 2]


def test_variant_keeps_name_and_binaries(tmp_path: Any) -> None:
    path = tmp_path / "b"
    path.write_bytes(b"x")
    ts = TaskSet([{"pkg": "b", "period": [1, 2]}], binaries={"b": path}, name="mine")
    variant = next(ts.variants())
    assert variant.name == "mine" and "#0" in repr(variant)
    assert variant.binaries() == {"b": path.resolve()}
    variant.job_id = "settable"  # type: ignore[attr-defined]  # the distributor tags variants
