"""The benchmark scripts run from bench/ and print one JSON document (small sizes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [["bench/variants.py", "-n", "2000"], ["bench/agent_rtt.py", "--sets", "5", "--pings", "50"]],
)
def test_bench_prints_json(argv: list[str]) -> None:
    res = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert isinstance(json.loads(res.stdout), dict)
