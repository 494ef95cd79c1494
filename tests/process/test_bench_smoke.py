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


def test_fidelity_through_compare_script_from_after_local() -> None:
    """bench/compare.py --script-from after runs bench/fidelity.py on both sides (here the same
    checkout, local agents): release -> START figures and job counts for the experiment."""
    argv = [sys.executable, "bench/compare.py", "--before", str(ROOT), "--runs", "1"]
    argv += ["--script-from", "after", "fidelity.py", "--backend", "local", "--guests", "1"]
    argv += ["--repeat", "1", "--cyclictest-sets", "0", "--timeout", "120"]
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    assert doc["script_from"] == "after"
    figs = doc["figures"]
    planned = figs["guests_1.experiment.planned_jobs"]
    assert planned["before"] == planned["after"] == 63
    latency = figs["guests_1.experiment.release_to_start_ms.median"]
    assert latency["before"] is not None and latency["before"] >= 0
    starts = figs["guests_1.experiment.jobs.START"]["after"]
    skipped = figs["guests_1.experiment.jobs.NOT_SCHEDULED"]["after"]
    assert starts is not None and skipped is not None and starts + skipped == 63
