"""Builds a report directory: charts as PNG files plus a self-contained index.html."""

from __future__ import annotations

import logging
from pathlib import Path

from farm.errors import ConfigError
from farm.report import charts
from farm.report.data import ReportData, SetData, load
from farm.report.html import Chart, render

log = logging.getLogger(__name__)

DETAIL_SETS = 12
"""Task sets drawn in detail by default (the first half and the last half of the rest)."""


def pick_detail(sets: list[SetData], limit: int) -> tuple[list[SetData], int, int]:
    """First ceil(limit/2) and last floor(limit/2) sets -> (sets, gap index, sets left out)."""
    if limit < 0:
        raise ConfigError(f"detail must be >= 0, got {limit}")
    if len(sets) <= limit:
        return list(sets), len(sets), 0
    head = (limit + 1) // 2
    tail = limit - head
    chosen = sets[:head] + (sets[len(sets) - tail :] if tail else [])
    return chosen, head, len(sets) - limit


def overview_charts(data: ReportData) -> list[Chart]:
    """The charts over every set: states and exits, response times per task, miss rate per set."""
    out = [
        Chart("summary.png", "task sets by state and jobs by exit type", charts.summary_chart(data))
    ]
    resp = charts.response_chart(data)
    if resp is not None:
        out.append(Chart("responses.png", "response-time distribution per task", resp))
    miss = charts.miss_chart(data)
    if miss is not None:
        out.append(Chart("misses.png", "deadline-miss rate per task set", miss))
    return out


def build_report(db: str | Path, out_dir: str | Path, detail: int = DETAIL_SETS) -> Path:
    """Read ``db``, write PNGs and ``index.html`` into ``out_dir``; return the page's path."""
    data = load(db)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create report directory {out}: {exc}") from exc
    overview = overview_charts(data) if data.sets else []
    chosen, gap, omitted = pick_detail(data.sets, detail)
    detailed: list[tuple[SetData, Chart | None]] = []
    for s in chosen:
        png = charts.set_chart(s)
        detailed.append(
            (s, Chart(f"set-{s.id}.png", f"Gantt and response times of {s.label}", png))
        )
    page = render(data, overview, detailed, gap, omitted)
    index = out / "index.html"
    try:
        for chart in [*overview, *(c for _, c in detailed if c is not None)]:
            (out / chart.name).write_bytes(chart.png)
        index.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report into {out}: {exc}") from exc
    log.info("report of %d sets (%d in detail) written to %s", len(data.sets), len(chosen), index)
    return index
