"""Report charts as PNG bytes (matplotlib, Agg canvas, no pyplot state).

``set_chart``: one variant, Gantt of its jobs per task (bars coloured by exit
type, deadline misses marked) beside each task's response times.
``summary_chart``, ``response_chart``, ``miss_chart``: overviews of every
variant in the database (constant cost per chart, so 10,000 sets stay fast).
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterable
from typing import Any

from farm.errors import MissingDependency
from farm.report.data import STATES, ReportData, SetData

try:
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator
except ImportError as exc:  # an optional dependency: say which extra brings it
    raise MissingDependency(
        f"farm report draws with matplotlib and numpy ({exc.name} is not installed): "
        "pip install 'farm[report]'"
    ) from exc

log = logging.getLogger(__name__)

EXIT_COLOURS = {
    "EXIT": "#4caf50",
    "EXIT_CRITICAL": "#ff9800",
    "EXIT_PERIOD": "#e91e63",
    "EXIT_ERROR": "#d32f2f",
    "OUT_OF_QUOTA": "#7b1fa2",
    "EXIT_EXTERNAL": "#757575",
    "NOT_SCHEDULED": "#212121",
}
"""Colour of each exit type (Gantt bars, points, exit counts)."""
NO_EXIT = "no exit (cut off)"
NO_EXIT_COLOUR = "#cfd8dc"
STATE_COLOURS = {
    "finished": "#4caf50",
    "stopped": "#ff9800",
    "bad": "#d32f2f",
    "started": "#90a4ae",
}
MISS_COLOUR = "#b71c1c"
DPI = 96
_MPL = tuple(int(x) for x in matplotlib.__version__.split(".")[:2])
_HORIZONTAL: dict[str, Any] = {"orientation": "horizontal"} if _MPL >= (3, 10) else {"vert": False}


def colour(exit_type: str | None) -> str:
    """Colour for an exit type (grey for unknown, light grey for none)."""
    if exit_type is None:
        return NO_EXIT_COLOUR
    return EXIT_COLOURS.get(exit_type, "#9e9e9e")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _ms(t: float | None, t0: float) -> float | None:
    return None if t is None else (t - t0) * 1000.0


def _gantt(ax: Any, s: SetData, rows: dict[int, int]) -> set[str]:
    """Draw the jobs of ``s`` on ``ax``; return the legend kinds used."""
    t0 = s.t0 if s.t0 is not None else min((j.start or j.end or 0.0) for j in s.jobs)
    t_max = max((t for j in s.jobs for t in (j.start, j.end) if t is not None), default=t0)
    bars: dict[str | None, dict[int, list[tuple[float, float]]]] = {}
    skipped, releases, misses = [], [], []
    for j in s.jobs:
        y = rows[j.task_id]
        if j.release is not None:
            releases.append((_ms(j.release, t0), y))
        start = _ms(j.start, t0)
        if start is None:  # never started (NOT_SCHEDULED): a marker at its release or end
            at = _ms(j.release if j.release is not None else j.end, t0)
            if at is not None:
                skipped.append((at, y))
            continue
        end = _ms(j.end if j.end is not None else t_max, t0)
        assert end is not None
        width = max(end - start, 0.3)  # a visible sliver even for sub-ms jobs
        bars.setdefault(j.exit_type, {}).setdefault(y, []).append((start, width))
        if j.missed:
            misses.append((end, y))
    for kind, by_row in bars.items():
        for y, spans in by_row.items():
            ax.broken_barh(
                spans,
                (y - 0.3, 0.6),
                facecolors=colour(kind),
                edgecolor="#263238",
                linewidth=0.4,
                hatch="//" if kind is None else None,
            )
    used = {k if k is not None else NO_EXIT for k in bars}
    if releases:
        xs, ys = zip(*releases, strict=True)
        ax.scatter(xs, [y - 0.42 for y in ys], marker="|", s=60, color="#546e7a", zorder=3)
        used.add("release")
    if skipped:
        xs, ys = zip(*skipped, strict=True)
        ax.scatter(xs, ys, marker="v", s=50, color=colour("NOT_SCHEDULED"), zorder=4)
        used.add("NOT_SCHEDULED")
    if misses:
        xs, ys = zip(*misses, strict=True)
        ax.scatter(
            xs,
            [y + 0.38 for y in ys],
            marker="X",
            s=70,
            color=MISS_COLOUR,
            zorder=5,
            edgecolor="white",
            linewidth=0.5,
        )
        used.add("deadline miss")
    ax.set_xlabel("time since release of the first jobs (ms, guest clock)")
    ax.grid(axis="x", color="#eceff1")
    ax.set_axisbelow(True)
    return used


def _legend(kinds: Iterable[str]) -> list[Any]:
    handles: list[Any] = []
    for kind in [*EXIT_COLOURS, NO_EXIT, "release", "deadline miss"]:
        if kind not in kinds:
            continue
        if kind == "release":
            handles.append(Line2D([], [], marker="|", ls="", color="#546e7a", ms=9, label=kind))
        elif kind == "deadline miss":
            handles.append(Line2D([], [], marker="X", ls="", color=MISS_COLOUR, ms=8, label=kind))
        else:
            none = kind == NO_EXIT
            handles.append(
                Patch(
                    facecolor=colour(None if none else kind),
                    label=kind,
                    edgecolor="#263238",
                    hatch="//" if none else None,
                )
            )
    return handles


def _responses(ax: Any, s: SetData, rows: dict[int, int], rng: random.Random) -> None:
    """Response times per task: a box per row, jittered points in exit colours, limit marked."""
    data, pos = [], []
    for task_id, y in rows.items():
        values = [
            j.response * 1000.0 for j in s.jobs if j.task_id == task_id and j.response is not None
        ]
        if values:
            data.append(values)
            pos.append(y)
    if data:
        ax.boxplot(
            data,
            positions=pos,
            widths=0.5,
            showfliers=False,
            manage_ticks=False,
            medianprops={"color": "#263238"},
            **_HORIZONTAL,
        )
    points: dict[str | None, tuple[list[float], list[float]]] = {}
    for j in s.jobs:
        if j.response is not None:
            xs, ys = points.setdefault(j.exit_type, ([], []))
            xs.append(j.response * 1000.0)
            ys.append(rows[j.task_id] + rng.uniform(-0.18, 0.18))
    for kind, (xs, ys) in points.items():
        ax.scatter(
            xs,
            ys,
            s=18 if len(xs) < 200 else 5,
            color=colour(kind),
            edgecolor="#263238",
            linewidth=0.3,
            zorder=3,
        )
    for task_id, y in rows.items():
        limit = s.tasks[task_id].limit_ms if task_id in s.tasks else 0.0
        if limit > 0:
            ax.plot([limit, limit], [y - 0.4, y + 0.4], color=MISS_COLOUR, ls="--", lw=1.2)
    ax.set_xlabel("response time (ms); dashed: limit")
    ax.set_xlim(left=0)
    ax.grid(axis="x", color="#eceff1")
    ax.set_axisbelow(True)


def _task_label(s: SetData, task_id: int) -> str:
    t = s.tasks.get(task_id)
    if t is None:
        return f"task {task_id}"
    bits = [t.pkg or "?"]
    if t.period > 0:
        bits.append(f"T={t.period:g}")
    if t.limit_ms > 0:
        bits.append(f"D={t.limit_ms:g}")
    return f"task {task_id}\n{' '.join(bits)}"


def set_chart(s: SetData) -> bytes:
    """PNG: Gantt of the variant's jobs per task and their response times beside it."""
    task_ids = sorted({*s.tasks, *(j.task_id for j in s.jobs)})
    rows = {tid: i for i, tid in enumerate(reversed(task_ids))}
    fig = Figure(figsize=(12, 1.6 + 0.75 * max(len(rows), 1)), layout="constrained")
    gantt, resp = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1])
    kinds = _gantt(gantt, s, rows) if s.jobs else set()
    if not s.jobs:
        gantt.text(
            0.5,
            0.5,
            "no jobs recorded",
            ha="center",
            va="center",
            transform=gantt.transAxes,
            color="#757575",
        )
    _responses(resp, s, rows, random.Random(s.id))
    gantt.set_yticks(list(rows.values()), [_task_label(s, t) for t in rows])
    gantt.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    run = f"attempt {s.run_attempt} ({s.run_state})" if s.run_attempt else "no run"
    fig.suptitle(
        f"{s.label}: {s.state}, {run}, {s.misses} of {s.ended_jobs} jobs missed",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    if kinds:
        gantt.legend(
            handles=_legend(kinds),
            loc="lower left",
            bbox_to_anchor=(0, 1.0),
            ncols=9,
            fontsize=8,
            frameon=False,
            handletextpad=0.3,
            columnspacing=1.0,
        )
    return _png(fig)


def summary_chart(data: ReportData) -> bytes:
    """PNG: task sets by state and job exit types over the whole database."""
    fig = Figure(figsize=(12, 3.2), layout="constrained")
    states, exits = fig.subplots(1, 2, width_ratios=[1, 2])
    counts = [data.total.states.get(st, 0) for st in STATES]
    states.bar(STATES, counts, color=[STATE_COLOURS[s] for s in STATES])
    for x, n in enumerate(counts):
        states.annotate(str(n), (x, n), ha="center", va="bottom", fontsize=9)
    states.set_title("task sets by state", fontsize=10)
    states.set_ylim(0, max([*counts, 1]) * 1.15)
    states.yaxis.set_major_locator(MaxNLocator(integer=True))
    kinds = [k for k in EXIT_COLOURS if data.total.exits.get(k)] + sorted(
        k for k in data.total.exits if k not in EXIT_COLOURS
    )
    values = [data.total.exits[k] for k in kinds]
    exits.barh(kinds, values, color=[colour(k) for k in kinds])
    for y, n in enumerate(values):
        exits.annotate(f" {n}", (n, y), va="center", fontsize=9)
    exits.invert_yaxis()
    rate = data.total.miss_rate
    missed = "no ended jobs" if rate is None else f"deadline-miss rate {rate:.1%}"
    exits.set_title(f"jobs by exit type ({data.total.jobs} ended, {missed})", fontsize=10)
    exits.set_xlim(0, max([*values, 1]) * 1.12)
    exits.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def response_chart(data: ReportData) -> bytes | None:
    """PNG: response-time distribution per task id over every variant (None without any)."""
    by_task: dict[int, list[float]] = {}
    limits: dict[int, set[float]] = {}
    for s in data.sets:
        for j in s.jobs:
            if j.response is not None:
                by_task.setdefault(j.task_id, []).append(j.response * 1000.0)
        for tid, t in s.tasks.items():
            if t.limit_ms > 0:
                limits.setdefault(tid, set()).add(t.limit_ms)
    if not by_task:
        return None
    ids = sorted(by_task)
    fig = Figure(figsize=(12, 1.4 + 0.55 * len(ids)), layout="constrained")
    ax = fig.subplots()
    ax.boxplot(
        [by_task[t] for t in ids],
        positions=range(len(ids)),
        widths=0.5,
        flierprops={"markersize": 3, "alpha": 0.5},
        medianprops={"color": "#263238"},
        manage_ticks=False,
        **_HORIZONTAL,
    )
    for y, tid in enumerate(ids):
        for limit in limits.get(tid, ()):
            ax.plot([limit, limit], [y - 0.4, y + 0.4], color=MISS_COLOUR, ls="--", lw=1.2)
    ax.set_yticks(range(len(ids)), [f"task {t} ({len(by_task[t])} jobs)" for t in ids])
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel("response time (ms), all task sets; dashed: limits")
    ax.set_title("response times per task over every task set", fontsize=10)
    ax.grid(axis="x", color="#eceff1")
    return _png(fig)


def miss_chart(data: ReportData) -> bytes | None:
    """PNG: deadline-miss rate of each variant in recording order (None for fewer than 2)."""
    points = [
        (i, s.misses / s.ended_jobs, s.state) for i, s in enumerate(data.sets) if s.ended_jobs
    ]
    if len(points) < 2:
        return None
    fig = Figure(figsize=(12, 2.8), layout="constrained")
    ax = fig.subplots()
    for state in STATES:
        pts = [(i, r * 100.0) for i, r, st in points if st == state]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(
                xs, ys, s=14 if len(points) < 500 else 4, color=STATE_COLOURS[state], label=state
            )
    if len(points) > 50:  # a band of dots says little: add a moving average
        window = max(len(points) // 50, 5)
        rates = np.array([r * 100.0 for _, r, _ in points])
        mean = np.convolve(rates, np.ones(window) / window, mode="valid")
        at = [i for i, _, _ in points][window - 1 :]
        ax.plot(at, mean, color="#263238", lw=1.5, label=f"moving mean of {window}")
    ax.set_ylim(-3, 103)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("task set (recording order)")
    ax.set_ylabel("missed jobs (%)")
    ax.set_title("deadline-miss rate per task set", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(color="#eceff1")
    return _png(fig)
