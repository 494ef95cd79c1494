"""bench/stats.py: the one percentile definition every bench script uses (nearest rank)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

COMMON = Path(__file__).resolve().parents[2] / "bench" / "stats.py"


@pytest.fixture(scope="module")
def common() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_stats", COMMON)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_stats"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_p90_of_ten_is_the_ninth_value_not_the_maximum(common: ModuleType) -> None:
    values = [float(v) for v in range(10, 0, -1)]  # order does not matter
    assert common.percentile(values, 90) == 9.0
    assert common.percentile(values, 50) == 5.0
    assert common.percentile(values, 100) == 10.0
    assert common.percentile(values, 0) == 1.0
    assert common.percentile(values, 91) == 10.0  # more than 9 of 10 needed: the 10th


def test_textbook_nearest_rank_values(common: ModuleType) -> None:
    # the worked example of the nearest-rank method: 15, 20, 35, 40, 50
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert [common.percentile(values, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    # p99 of 1..1000 is the 990th value, p95 of 1..20 the 19th, any p of one value that value
    assert common.percentile([float(v) for v in range(1, 1001)], 99) == 990.0
    assert common.percentile([float(v) for v in range(1, 21)], 95) == 19.0
    assert common.percentile([7.5], 99) == 7.5


def test_float_noise_adds_no_rank(common: ModuleType) -> None:
    values = [float(v) for v in range(1, 101)]
    for p in range(1, 101):
        assert common.percentile(values, p) == float(p)
    assert common.percentile([float(v) for v in range(1, 1001)], 99.9) == 999.0


def test_bad_input_raises(common: ModuleType) -> None:
    with pytest.raises(ValueError, match="no values"):
        common.percentile([], 50)
    for p in (-1, 101):
        with pytest.raises(ValueError, match=r"not in 0\.\.100"):
            common.percentile([1.0], p)
