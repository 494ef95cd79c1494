"""Blocks: ready dicts and Value/Variants/Random factories, consistent with the agent's pkgs."""

from __future__ import annotations

import random
from typing import Any

import pytest

from farm.agent.pkgs import BUILTIN_PKGS
from farm.blocks import (
    binaries,
    cond_42,
    cond_mod,
    critical,
    deadline,
    hey,
    idle,
    jobs,
    linpack,
    memhog,
    namaste,
    offset,
    period,
    pi,
    priority,
    quota,
    shell,
    tumatmul,
)
from farm.blocks._make import RandomBlock
from farm.errors import ConfigError, TaskSetError
from farm.taskset import BlockTaskSet, Task, TaskSet


def _one(*blocks: Any, seed: int = 1) -> dict[str, Any]:
    (variant,) = TaskSet([Task(*blocks)], seed=seed).variants()
    return variant.description()["tasks"][0]


def test_ready_workload_blocks() -> None:
    assert hey.HelloWorld == {"pkg": "hey", "config": {}}
    assert namaste.Namaste == {"pkg": "namaste", "config": {}}
    assert idle.Idle == {"pkg": "idle", "config": {"ms": 100}}
    assert shell.Command("echo hi") == {"pkg": "shell", "config": {"command": "echo hi"}}


@pytest.mark.parametrize(
    ("module", "pkg", "arg", "value"),
    [
        (pi, "pi", "digits", 10),
        (cond_42, "cond_42", "arg", 7),
        (cond_mod, "cond_mod", "arg", 7),
        (linpack, "linpack", "n", 20),
        (tumatmul, "tumatmul", "n", 10),
        (idle, "idle", "ms", 5),
        (memhog, "memhog", "bytes", 4096),
    ],
)
def test_workload_value_variants_random(module: Any, pkg: str, arg: str, value: int) -> None:
    assert module.Value(value) == {"pkg": pkg, "config": {arg: value}}
    ts = TaskSet([module.Variants([value, value + 1])])
    assert [v[0]["config"][arg] for v in ts.variants()] == [value, value + 1]
    drawn = _one(module.Random(value, value + 3))
    assert drawn["pkg"] == pkg and value <= drawn["config"][arg] <= value + 3
    counted = TaskSet([Task(module.Random(value, value + 3, count=4))], seed=2)
    assert counted.variant_count() == 4


def test_break_blocks() -> None:
    assert cond_42.Break() == cond_42.Value(42)
    assert cond_mod.Break() == cond_mod.Value(2)
    arg = _one(cond_mod.RandomBreak())["config"]["arg"]
    assert arg % 2 == 0 and 0 <= arg <= 200


def test_memhog_accepts_sizes() -> None:
    assert memhog.Value("4K") == {"pkg": "memhog", "config": {"bytes": 4096}}


def test_workload_pkgs_are_known_to_the_agent() -> None:
    pkgs = {block["pkg"] for block in binaries.All() if isinstance(block, dict)}
    pkgs |= {memhog.Value(1)["pkg"], idle.Idle["pkg"], hey.HelloWorld["pkg"]}
    assert pkgs <= BUILTIN_PKGS


@pytest.mark.parametrize(
    ("module", "key"),
    [
        (priority, "priority"),
        (period, "period"),
        (jobs, "numberofjobs"),
        (offset, "offset"),
        (deadline, "deadline"),
        (critical, "criticaltime"),
    ],
)
def test_attribute_value_variants_random(module: Any, key: str) -> None:
    assert module.Value(5) == {key: 5}
    assert module.Variants([1, 2]) == {key: [1, 2]}
    got = _one(hey.HelloWorld, module.Random(3, 9))[key]
    assert 3 <= got <= 9 and isinstance(got, int)
    ts = TaskSet([Task(hey.HelloWorld, module.Random(3, 9, 5))], seed=4)
    assert ts.variant_count() == 5
    assert all(3 <= v[0][key] <= 9 for v in ts.variants())


def test_float_bounds_draw_floats() -> None:
    got = _one(hey.HelloWorld, period.Random(1.0, 2.0))["period"]
    assert isinstance(got, float) and 1.0 <= got <= 2.0


def test_quota_blocks() -> None:
    assert quota.Value("1M") == {"quota": "1M"}
    assert _one(hey.HelloWorld, quota.Value("1M"))["quota"] == 1 << 20
    with pytest.raises(ConfigError, match="quota"):
        quota.Value("lots")
    assert quota.Variants(["1M", "2M"]) == {"quota": ["1M", "2M"]}


def test_priority_helpers() -> None:
    assert priority.EDF == {"priority": 128}
    assert not hasattr(priority, "BEST_EFFORT"), "best effort is no priority block at all"
    assert priority.Variants() == {"priority": range(1, 128)}
    for helper, lo, hi in [
        (priority.HighRandom, 85, 127),
        (priority.MediumRandom, 43, 84),
        (priority.LowRandom, 1, 42),
        (period.HighRandom, 1, 5),
        (period.MediumRandom, 5, 10),
        (period.LowRandom, 10, 20),
    ]:
        block = helper()
        assert (block.lo, block.hi) == (lo, hi)


def test_priority_zero_is_refused_and_no_priority_block_is_best_effort() -> None:
    with pytest.raises(TaskSetError, match=r"task 1: priority must be an int in 1\.\.128"):
        BlockTaskSet(hey.HelloWorld, priority.Value(0)).validate()
    (task,) = BlockTaskSet(hey.HelloWorld).description()["tasks"]
    assert task["priority"] == 0, "the wire value for best effort"


def test_uncalled_factories_work_taskgen_style() -> None:
    ts = BlockTaskSet(hey.HelloWorld, priority.Random, period.Variants, seed=3)
    assert ts.variant_count() == 20
    assert 1 <= ts[0]["priority"] <= 127


@pytest.mark.parametrize(
    "args", [(5, 1), ("a", 2), (1, 2, 0), (1, 2, 1.5), (True, 2)], ids=lambda a: repr(a)
)
def test_random_block_rejects_bad_bounds(args: tuple[Any, ...]) -> None:
    with pytest.raises(ConfigError):
        RandomBlock("period", *args)


def test_variants_needs_a_dimension() -> None:
    with pytest.raises(ConfigError, match="variants must be"):
        period.Variants(5)


def test_random_block_uses_only_the_given_rng() -> None:
    random.seed(0)
    state = random.getstate()
    block = priority.Random(1, 127, count=3)
    assert block(random.Random(9)) == block(random.Random(9))
    assert random.getstate() == state
    assert "priority" in repr(block)


def test_binaries_mixes() -> None:
    ts = BlockTaskSet(binaries.All(), priority.Value(10))
    assert len(ts) == len(binaries.All())
    ts.validate()
    first = [t["pkg"] for t in BlockTaskSet(binaries.RandomList(6), seed=11)]
    again = [t["pkg"] for t in BlockTaskSet(binaries.RandomList(6), seed=11)]
    assert first == again and set(first) <= BUILTIN_PKGS
    assert isinstance(binaries.Random()(random.Random(1)), dict)
