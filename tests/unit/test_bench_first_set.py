"""bench/first_set.py: a set's phases from the agent's event times on the host's clock."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "first_set.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("first_set_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phases_put_the_agent_times_on_the_host_clock() -> None:
    bench = _module()
    # agent clock = host clock + 100 s; sent at 10.000, START at 10.030, end at 10.050,
    # JOBS_DONE received at 10.070 (host)
    times = {"sent": 10.0, "start": 110.03, "end": 110.05, "done": 10.07, "total": 0.07}
    split = bench.phases(times, 100.0)
    assert split == pytest.approx({"to_start": 0.03, "job": 0.02, "to_done": 0.02})
    assert bench.phases({"sent": 1.0, "done": 2.0, "total": 1.0}, 0.0) is None


def test_clock_offset_takes_the_sample_of_least_round_trip() -> None:
    bench = _module()
    clock = iter([0.0, 0.5, 1.0, 1.01, 2.0, 2.2])  # round trips 0.5, 0.01, 0.2

    class Session:
        replies = iter([100.0, 101.005, 102.0])

        def call(self, op: str, args: dict[str, Any]) -> dict[str, float]:
            assert op == "time"
            return {"monotonic": next(self.replies)}

    offset = bench.clock_offset(Session(), samples=3, clock=lambda: next(clock))
    assert offset == pytest.approx(100.0)
