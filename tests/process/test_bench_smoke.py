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


def test_bench_all_quick_local(tmp_path: Path) -> None:
    """bench/all.py --quick --local-only: one JSON document, every figure judged, PNGs written."""
    out = tmp_path / "plots"
    res = subprocess.run(
        [sys.executable, "bench/all.py", "--quick", "--local-only", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    figs = doc["figures"]
    for key in (
        "dispatch_latency_local_ms",
        "trivial_sets_per_s_local",
        "farm_overhead_local",
        "scaling_local",
        "idle_distributor_cpu_local_percent",
        "variants_1e9",
    ):
        fig = figs[key]
        assert "error" not in fig, (key, fig)
        assert fig["value"] is not None and fig["target"] and fig["how"], (key, fig)
        assert fig["status"] in ("pass", "fail", "n/a"), (key, fig)
    latency = figs["dispatch_latency_local_ms"]["value"]
    assert latency["n"] > 0 and 0 <= latency["p50"] <= latency["p99"]
    assert set(figs["scaling_local"]["value"]) == {str(n) for n in range(1, 8)}
    for name in ("dispatch.png", "overhead.png", "scaling.png"):
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert sorted(doc["plots"]) == sorted(
        str(out / n) for n in ("dispatch.png", "overhead.png", "scaling.png")
    )
