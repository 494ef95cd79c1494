"""PNG plots of a ``bench/all.py`` document (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _save(fig: Any, out: Path, name: str) -> Path:
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def boot_plot(boots: dict[str, dict[str, Any]], out: Path) -> Path | None:
    """Bars of boot-to-ready median with p90 whiskers, per backend/network, with targets."""
    rows = [(k, v) for k, v in boots.items() if v and "median" in v]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = [k for k, _ in rows]
    med = [v["median"] for _, v in rows]
    p90 = [max(0.0, v.get("p90", v["median"]) - v["median"]) for _, v in rows]
    ax.bar(names, med, yerr=[[0] * len(p90), p90], capsize=4, color="#4c72b0")
    ax.axhline(1.5, color="red", ls="--", lw=1, label="target cold 1.5 s")
    ax.axhline(0.5, color="orange", ls="--", lw=1, label="target warm 0.5 s")
    ax.set_ylabel("boot to agent ready (s)")
    ax.set_title("Boot-to-ready: median, whisker to p90")
    ax.tick_params(axis="x", labelrotation=20)
    ax.legend(fontsize=8)
    return _save(fig, out, "boot.png")


def dispatch_plot(latencies: dict[str, list[float]], out: Path) -> Path | None:
    """CDF of free-machine-to-next-set dispatch latency per backend, with the 50 ms target."""
    series = {k: sorted(v) for k, v in latencies.items() if v}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in series.items():
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post", label=name)
    ax.axvline(50, color="red", ls="--", lw=1, label="target p99 50 ms")
    ax.set_xscale("log")
    ax.set_xlabel("dispatch latency (ms, log)")
    ax.set_ylabel("fraction of sets")
    ax.set_title("Free machine -> next set released on the agent")
    ax.legend(fontsize=8)
    return _save(fig, out, "dispatch.png")


def overhead_plot(rows: dict[str, tuple[float, float]], out: Path) -> Path | None:
    """Per backend: farm's per-set cycle next to the bare protocol exchange (ms)."""
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(rows)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [rows[n][0] for n in names], 0.4, label="through Distributor")
    ax.bar([i + 0.2 for i in x], [rows[n][1] for n in names], 0.4, label="bare start->finished")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("ms per trivial set (median)")
    ax.set_title("Farm overhead (target ratio <= 1.5)")
    ax.legend(fontsize=8)
    return _save(fig, out, "overhead.png")


def scaling_plot(curves: dict[str, list[dict[str, Any]]], out: Path) -> Path | None:
    """Speed-up over 1 machine vs machine count per backend, with ideal and 6x-at-7 target."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    top = max(p["machines"] for c in curves.values() for p in c)
    ax.plot([1, top], [1, top], color="grey", ls=":", label="ideal")
    for name, curve in curves.items():
        ax.plot(
            [p["machines"] for p in curve], [p["speedup_vs_1"] for p in curve], "o-", label=name
        )
    ax.plot([7], [6], "r*", ms=10, label="target: 7 machines >= 6x")
    ax.set_xlabel("machines")
    ax.set_ylabel("throughput / throughput with 1")
    ax.set_title("Scaling on sleep-bound sets")
    ax.legend(fontsize=8)
    return _save(fig, out, "scaling.png")
