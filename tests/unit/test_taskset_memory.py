"""Variants stream at constant memory: a 10^9-variant product and an infinite generator."""

from __future__ import annotations

import collections
import gc
import itertools
import tracemalloc

import psutil

from farm.taskset import TaskSet

LIMIT = 50 * 1024 * 1024


def _billion() -> TaskSet:
    return TaskSet(
        [
            {"pkg": "hey", "period": range(1000), "priority": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
            {"pkg": "pi", "config": {"digits": list(range(1, 101))}, "offset": range(10)},
            {"pkg": "cond_mod", "config": {"arg": range(100)}},
        ]
    )


def test_billion_variant_product_streams_in_flat_memory() -> None:
    ts = _billion()
    assert ts.variant_count() == 10**9
    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    tracemalloc.start()
    try:
        last = collections.deque(itertools.islice(ts.variants(), 100_000), maxlen=1).pop()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = process.memory_info().rss - rss_before
    assert last.index == 99_999
    assert last[2]["config"]["arg"] == 99_999 % 100
    assert peak < LIMIT, f"traced peak {peak} bytes"
    assert rss_growth < LIMIT, f"RSS grew {rss_growth} bytes"


def test_infinite_generator_streams_in_flat_memory() -> None:
    ts = TaskSet([{"pkg": "hey", "period": itertools.count(), "priority": [1, 2]}])
    tracemalloc.start()
    try:
        variant = collections.deque(itertools.islice(ts.variants(), 10_000), maxlen=1).pop()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert variant.index == 9_999 and variant[0]["period"] == 4_999
    assert peak < LIMIT, f"traced peak {peak} bytes"
