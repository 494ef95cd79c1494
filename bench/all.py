"""The whole bench suite in one command: one JSON document on stdout, PNG plots in --out.

    .venv/bin/python bench/all.py [--quick] [--out bench/out] [--local-only]

Every figure of issue 9 is measured by one of the bench scripts, run here as
a subprocess with its own CLI (so each stays usable alone and this file only
collects): ``boot.py`` (raw QEMU boot-to-handshake, user-mode and bridged
network in a private namespace, ``--warm`` snapshot restore when boot.py has
it), ``ready.py`` (boot-to-ready through farm's qemu and libvirt backends),
``dispatch.py`` (dispatch latency and overhead vs the bare round trip, local
agents and QEMU guests), ``scaling.py`` (1..7 machines, idle CPU, RSS per
guest) and ``variants.py``. Each figure carries its value, the issue's
target, pass/fail and how it was measured. ``--quick`` shrinks every size
(2 boots, fewer sets, shorter sleeps) to finish in about two minutes;
``--local-only`` runs just the parts on local agent processes (no QEMU, no
root): the CI smoke. A part that fails is reported with its error and its
figures fail; the suite goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import plots  # noqa: E402
from common import percentile  # noqa: E402


def bench(script: str, *args: str, timeout: float = 1800) -> dict[str, Any]:
    """Run ``bench/<script>`` with ``args``; its JSON document, or {"error": ...}."""
    argv = [sys.executable, str(BENCH / script), *args]
    t0 = time.monotonic()
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s", "argv": argv[1:]}
    took = round(time.monotonic() - t0, 1)
    if res.returncode != 0:
        return {"error": (res.stderr or res.stdout)[-800:], "argv": argv[1:], "took_s": took}
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        return {"error": f"no JSON: {res.stdout[-400:]}", "argv": argv[1:]}
    doc["took_s"] = took
    return doc


def figure(
    value: Any, unit: str, target: str, ok: bool | None, how: str, **extra: Any
) -> dict[str, Any]:
    """One figure: value, the issue's target, pass/fail (None: no target) and how measured."""
    status = "n/a" if ok is None else ("pass" if ok else "fail")
    return {"value": value, "unit": unit, "target": target, "status": status, "how": how, **extra}


def _err(doc: dict[str, Any], how: str, target: str) -> dict[str, Any]:
    return figure(None, "", target, False, how, error=doc.get("error"))


def boot_stats(doc: dict[str, Any]) -> dict[str, float] | None:
    """median/p90 of boot.py's per-boot latencies."""
    lat = doc.get("latency_s", {}).get("all")
    if not lat:
        return None
    return {"median": doc["latency_s"]["median"], "p90": percentile(lat, 90), "n": len(lat)}


def has_warm() -> bool:
    """True if bench/boot.py offers ``--warm`` (snapshot restore)."""
    res = subprocess.run(
        [sys.executable, str(BENCH / "boot.py"), "--help"], capture_output=True, text=True
    )
    return "--warm" in res.stdout


def boot_figures(boots: int, figs: dict[str, Any], plot: dict[str, Any]) -> None:
    """Raw QEMU boot-to-handshake (user, bridge, warm) via bench/boot.py; RSS per guest."""
    how = f"bench/boot.py --boots {boots}: QEMU start -> agent handshake, TCG"
    runs = {"qemu-user": ["--network", "user"], "qemu-bridge": ["--network", "bridge"]}
    if has_warm():
        runs["qemu-warm"] = ["--warm"]
    for name, args in runs.items():
        doc = bench("boot.py", "--boots", str(boots), *args)
        target = "<= 0.5 s" if name.endswith("warm") else "<= 1.5 s"
        key = f"boot_to_ready_{name.replace('-', '_')}_s"
        stats = boot_stats(doc)
        if stats is None:
            figs[key] = _err(doc, how + " " + " ".join(args), target)
            continue
        limit = 0.5 if name.endswith("warm") else 1.5
        figs[key] = figure(
            stats, "s", target, stats["p90"] <= limit, f"{how} {' '.join(args)} (pass on p90)"
        )
        plot[f"raw {name}"] = stats
        rss = doc.get("qemu_rss_mib", {})
        if name == "qemu-user" and "rss_minus_guest_ram_mib" in rss:
            figs["host_rss_per_guest_beyond_ram_mib"] = figure(
                rss["rss_minus_guest_ram_mib"],
                "MiB",
                "<= 40 MiB",
                rss["rss_minus_guest_ram_mib"] <= 40,
                f"bench/boot.py: QEMU process RSS at handshake minus guest RAM "
                f"({rss.get('guest_ram_mib')} MiB), median",
            )
    if not runs.get("qemu-warm"):
        figs["boot_to_ready_qemu_warm_s"] = figure(
            None, "s", "<= 0.5 s", None, "bench/boot.py has no --warm yet: not measured"
        )


def ready_figures(boots: int, figs: dict[str, Any], plot: dict[str, Any]) -> None:
    """Boot-to-ready through farm's backends (qemu, libvirt) via bench/ready.py."""
    for backend in ("qemu", "libvirt"):
        doc = bench("ready.py", "--backend", backend, "--boots", str(boots))
        how = f"bench/ready.py --backend {backend} --boots {boots}: spawn -> authenticated session"
        key = f"farm_boot_to_ready_{backend}_s"
        if "error" in doc:
            figs[key] = _err(doc, how, "<= 1.5 s")
            continue
        stats = {k: doc["ready_s"][k] for k in ("median", "p90")} | {"n": boots}
        figs[key] = figure(
            stats,
            "s",
            "<= 1.5 s",
            stats["p90"] <= 1.5,
            how + " (pass on p90; the first boot on the fresh state dir is reported apart)",
            first_boot_s=doc.get("first_boot_s"),
        )
        plot[f"farm {backend}"] = stats


def dispatch_figures(
    backend: str, sets: int, figs: dict[str, Any], lat: dict[str, Any], over: dict[str, Any]
) -> None:
    """Dispatch p50/p99, trivial sets/s, bare round trip and overhead on ``backend``."""
    bare_sets = max(20, sets // 2)
    doc = bench(
        "dispatch.py", "--backend", backend, "--sets", str(sets), "--bare-sets", str(bare_sets),
        "--pings", "300", "--raw",
    )  # fmt: skip
    how = (
        f"bench/dispatch.py --backend {backend} --sets {sets}: agent clock, last JOBS_DONE of "
        "set k -> release of set k+1's first job, one machine"
    )
    if "error" in doc:
        figs[f"dispatch_latency_{backend}_ms"] = _err(doc, how, "p99 <= 50 ms")
        figs[f"farm_overhead_{backend}"] = _err(doc, how, "<= 1.5x bare")
        return
    d = doc["dispatch_latency_ms"]
    figs[f"dispatch_latency_{backend}_ms"] = figure(
        {"p50": d["p50"], "p99": d["p99"], "n": d["n"]}, "ms", "p99 <= 50 ms", d["p99"] <= 50, how
    )
    bare = doc["bare"]
    figs[f"trivial_sets_per_s_{backend}"] = figure(
        {
            "farm_sets_per_s": doc["farm_sets_per_s"],
            "bare_sets_per_s": bare["sets_per_s"],
            "bare_ping_rtt_ms": bare["ping_rtt_ms"]["median"],
        },
        "sets/s",
        "(reported next to the bare round trip)",
        None,
        "one machine, one-job hey sets through the Distributor vs the same set driven directly "
        "on a second connection to the same agent; ping = bare request/reply",
    )
    ratio = doc["overhead_ratio"]
    figs[f"farm_overhead_{backend}"] = figure(
        ratio,
        "x",
        "<= 1.5x bare",
        ratio <= 1.5,
        "median JOBS_DONE-to-JOBS_DONE cycle through the Distributor / median bare "
        "start->events->finished cycle of the same set on the same agent",
        farm_cycle_ms=doc["farm_cycle_ms"]["p50"],
        bare_cycle_ms=bare["set_ms"]["median"],
    )
    lat[backend] = doc["raw"]["latency_ms"]
    over[backend] = (doc["farm_cycle_ms"]["p50"], bare["set_ms"]["median"])


def scaling_figures(
    backend: str, args: list[str], figs: dict[str, Any], curves: dict[str, Any]
) -> None:
    """Scaling curve, idle distributor CPU and (qemu) RSS per guest via bench/scaling.py."""
    doc = bench("scaling.py", "--backend", backend, *args)
    how = f"bench/scaling.py --backend {backend} {' '.join(args)}"
    if "error" in doc:
        figs[f"scaling_{backend}"] = _err(doc, how, "7 machines >= 6x of 1")
        return
    curve = doc["curve"]
    top = curve[-1]
    figs[f"scaling_{backend}"] = figure(
        {p["machines"]: p["speedup_vs_1"] for p in curve},
        "x vs 1 machine",
        "7 machines >= 6x of 1",
        top["speedup_vs_1"] >= 6 if top["machines"] == 7 else None,
        how + ": sets of one shell `sleep` job, add_job -> last finish, machines booted "
        f"and warmed up beforehand ({doc.get('warmup_rounds', 0)} rounds of the same sets each)",
        sets_per_s={p["machines"]: p["sets_per_s"] for p in curve},
    )
    idle = doc["idle_cpu_percent"]
    figs[f"idle_distributor_cpu_{backend}_percent"] = figure(
        idle["percent"],
        "% of a core",
        "< 2 % with 7 machines",
        idle["percent"] < 2 if idle["machines"] == 7 else None,
        f"psutil cpu_percent of the distributor process over {idle['seconds']} s, "
        f"{idle['machines']} machines idle and booted (agents/guests not counted)",
    )
    if doc.get("guest_rss"):
        rss = doc["guest_rss"]
        figs[f"host_rss_per_guest_beyond_ram_{backend}_mib"] = figure(
            rss["beyond_guest_ram_mib_median"],
            "MiB",
            "<= 40 MiB",
            rss["beyond_guest_ram_mib_max"] <= 40,
            f"RSS of the {rss['guests']} QEMU processes after the run minus guest RAM "
            f"({rss['guest_ram_mib']} MiB); median (pass on max)",
            max=rss["beyond_guest_ram_mib_max"],
        )
    curves[backend] = curve


def variants_figure(n: int, figs: dict[str, Any]) -> None:
    """Variants/s and memory of a 10^9-variant job via bench/variants.py."""
    doc = bench("variants.py", "-n", str(n))
    how = f"bench/variants.py -n {n}: first {n} variants of a 10^9-variant product"
    if "error" in doc:
        figs["variants_1e9"] = _err(doc, how, "memory flat")
        return
    p = doc["product_1e9"]
    figs["variants_1e9"] = figure(
        {
            "variants_per_s": p["variants_per_second"],
            "tracemalloc_peak_kib": round(p["tracemalloc_peak_bytes"] / 1024, 1),
            "rss_growth_kib": round(p["rss_growth_bytes"] / 1024, 1),
        },
        "variants/s, KiB",
        "no number in the issue; memory must not grow with the job size",
        p["rss_growth_bytes"] < 16 * 2**20,
        how + " (pass: RSS growth < 16 MiB)",
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kvm": os.access("/dev/kvm", os.R_OK | os.W_OK),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (~2 minutes)")
    parser.add_argument("--out", type=Path, default=BENCH / "out", help="directory for PNGs")
    parser.add_argument("--local-only", action="store_true", help="no QEMU/libvirt/root parts")
    args = parser.parse_args()
    q = args.quick
    t0 = time.monotonic()
    doc: dict[str, Any] = {
        "suite": "farm bench",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "quick": q,
        "local_only": args.local_only,
        "machine": machine(),
        "command": " ".join(["python", "bench/all.py", *sys.argv[1:]]),
    }
    figs: dict[str, Any] = {}
    boot_plot: dict[str, Any] = {}
    lat: dict[str, Any] = {}
    over: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    dispatch_figures("local", 100 if q else 500, figs, lat, over)
    local = ["--sleep-ms", "500" if q else "1000", "--rounds", "2" if q else "3"]
    scaling_figures("local", [*local, "--idle-s", "3" if q else "10"], figs, curves)
    variants_figure(50_000 if q else 200_000, figs)
    if not args.local_only:
        boots = 2 if q else 10
        boot_figures(boots, figs, boot_plot)
        ready_figures(boots, figs, boot_plot)
        dispatch_figures("qemu", 30 if q else 200, figs, lat, over)
        machines = ["1", "7"] if q else ["1", "2", "3", "4", "5", "6", "7"]
        qemu = ["--machines", *machines, "--sleep-ms", "500" if q else "1000"]
        qemu += ["--rounds", "2" if q else "3", "--idle-s", "3" if q else "10"]
        scaling_figures("qemu", qemu, figs, curves)
    args.out.mkdir(parents=True, exist_ok=True)
    made = [
        plots.boot_plot(boot_plot, args.out),
        plots.dispatch_plot(lat, args.out),
        plots.overhead_plot(over, args.out),
        plots.scaling_plot(curves, args.out),
    ]
    doc["figures"] = figs
    doc["summary"] = {
        s: sorted(k for k, f in figs.items() if f["status"] == s) for s in ("pass", "fail", "n/a")
    }
    doc["plots"] = [str(p) for p in made if p is not None]
    doc["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["took_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
