"""Benchmark: variants generated per second, and peak memory, for TaskSet.variants().

Prints one JSON document. Cases: (a) the first N variants of a 10^9-variant
product of three tasks, (b) N variants of a task with an infinite generator
dimension. Each case runs twice: once timed (no tracing), once under
tracemalloc for the peak of Python allocations; RSS growth is reported too.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import psutil

from farm.taskset import TaskSet


def billion() -> TaskSet:
    """Three tasks whose dimensions multiply to 10^9 variants."""
    return TaskSet(
        [
            {"pkg": "hey", "period": range(1000), "priority": list(range(1, 11))},
            {"pkg": "pi", "config": {"digits": list(range(1, 101))}, "offset": range(10)},
            {"pkg": "cond_mod", "config": {"arg": range(100)}},
        ]
    )


def infinite() -> TaskSet:
    """One task whose period comes from an endless generator."""
    return TaskSet([{"pkg": "hey", "period": itertools.count(1), "priority": [1, 2]}])


def measure(make: Callable[[], TaskSet], n: int) -> dict[str, Any]:
    """Rate of the first ``n`` variants, traced peak and RSS growth."""
    process = psutil.Process()
    gc.collect()
    rss0 = process.memory_info().rss
    ts = make()
    start = time.perf_counter()
    for _ in itertools.islice(ts.variants(), n):
        pass
    elapsed = time.perf_counter() - start
    rss_growth = process.memory_info().rss - rss0
    ts = make()
    tracemalloc.start()
    for _ in itertools.islice(ts.variants(), n):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "variants": n,
        "variant_count": make().variant_count(),
        "seconds": round(elapsed, 3),
        "variants_per_second": round(n / elapsed),
        "tracemalloc_peak_bytes": peak,
        "rss_growth_bytes": rss_growth,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000, help="variants per case")
    args = parser.parse_args()
    result = {
        "bench": "variants",
        "python": platform.python_version(),
        "product_1e9": measure(billion, args.n),
        "infinite_generator": measure(infinite, args.n),
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
