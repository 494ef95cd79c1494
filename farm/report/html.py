"""Renders the report as one self-contained HTML page (PNGs inlined as data: URIs, no assets)."""

from __future__ import annotations

import base64
import html
import logging
import statistics
import time
from dataclasses import dataclass

from farm.report.data import STATES, JobSummary, ReportData, SetData

log = logging.getLogger(__name__)

NOT_FINISHED_ROWS = 100
"""At most this many rows in the table of sets that did not finish."""

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1240px;
       color: #263238; padding: 0 12px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #cfd8dc; padding-bottom: 4px; }
h3 { margin-bottom: 4px; } .meta { color: #607d8b; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #cfd8dc; padding: 3px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eceff1; } tr.total td { font-weight: bold; background: #f5f7f8; }
.miss { color: #b71c1c; font-weight: bold; } .note { color: #607d8b; font-style: italic; }
summary { cursor: pointer; color: #455a64; }
figure { margin: 8px 0 20px; } img { max-width: 100%; height: auto;
       border: 1px solid #eceff1; } section { margin-bottom: 28px; }
"""


@dataclass(frozen=True, slots=True)
class Chart:
    """A rendered chart: file name in the output directory, alt text, PNG bytes."""

    name: str
    alt: str
    png: bytes


def esc(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def img(chart: Chart) -> str:
    """An <img> with the PNG inlined (the file of the same name sits beside the page)."""
    data = base64.b64encode(chart.png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(chart.alt)}" '
        f'data-file="{esc(chart.name)}"></figure>'
    )


def _rate(misses: int, jobs: int) -> str:
    return "-" if not jobs else f"{misses / jobs:.1%}"


def _summary_row(s: JobSummary, css: str = "") -> str:
    cells = [esc(s.name), str(s.sets), *(str(s.states.get(st, 0)) for st in STATES)]
    cells += [str(s.jobs), str(s.misses), _rate(s.misses, s.jobs)]
    cls = f' class="{css}"' if css else ""
    return f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def summary_table(data: ReportData) -> str:
    """Sets by state, ended jobs, misses and miss rate per job name, plus a total row."""
    head = ["job", "sets", *STATES, "jobs ended", "deadline misses", "miss rate"]
    rows = [_summary_row(s) for s in data.by_job.values()]
    if len(data.by_job) != 1:
        rows.append(_summary_row(data.total, "total"))
    return (
        '<table id="summary"><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )


def _ms(values: list[float], fn: str) -> str:
    if not values:
        return "-"
    v = statistics.median(values) if fn == "median" else max(values)
    return f"{v * 1000.0:.1f}"


def task_table(s: SetData) -> str:
    """Per task of a variant: description, jobs, misses, response median/max, exit types."""
    head = [
        "task",
        "pkg",
        "priority",
        "period ms",
        "limit ms",
        "jobs ended",
        "misses",
        "median response ms",
        "max response ms",
        "exits",
    ]
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for tid in sorted({*s.tasks, *(j.task_id for j in s.jobs)}):
        t = s.tasks.get(tid)
        jobs = [j for j in s.jobs if j.task_id == tid]
        responses = [j.response for j in jobs if j.response is not None]
        misses = sum(1 for j in jobs if j.missed)
        exits: dict[str, int] = {}
        for j in jobs:
            key = j.exit_type or "no exit"
            exits[key] = exits.get(key, 0) + 1
        cells = [
            esc(tid),
            esc(t.pkg if t and t.pkg else "-"),
            esc(t.priority if t and t.priority else "-"),  # 0/None: best effort
            esc(f"{t.period:g}" if t and t.period > 0 else "-"),
            esc(f"{t.limit_ms:g}" if t and t.limit_ms > 0 else "-"),
            str(sum(1 for j in jobs if j.ended)),
            f'<span class="miss">{misses}</span>' if misses else "0",
            _ms(responses, "median"),
            _ms(responses, "max"),
            esc(", ".join(f"{k}: {n}" for k, n in sorted(exits.items()))),
        ]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def set_section(s: SetData, chart: Chart | None) -> str:
    """One variant: heading, state line, task table and its chart."""
    run = f"attempt {s.run_attempt} ({esc(s.run_state)})" if s.run_attempt else "never run"
    parts = [
        f'<section id="set-{s.id}"><h3>{esc(s.label)}</h3>',
        f'<p class="meta">state <b>{esc(s.state)}</b>, {s.tries} tries, showing {run}; '
        f"{s.misses} of {s.ended_jobs} ended jobs missed their deadline · "
        f"<code>{esc(s.job)}</code></p>",
        task_table(s),
    ]
    if chart is not None:
        parts.append(img(chart))
    parts.append("</section>")
    return "".join(parts)


def not_finished_table(data: ReportData) -> str:
    """Sets that did not finish (stopped, bad, cut off), at most NOT_FINISHED_ROWS of them."""
    rows = [s for s in data.sets if s.state != "finished"]
    if not rows:
        return ""
    opened = " open" if len(rows) <= 10 else ""
    out = [
        f"<h2>Task sets that did not finish ({len(rows)})</h2><details{opened}><summary>"
        f"stopped, bad or cut off: {len(rows)} task sets</summary><table><tr><th>set</th>"
        "<th>state</th><th>tries</th><th>jobs ended</th><th>misses</th></tr>"
    ]
    for s in rows[:NOT_FINISHED_ROWS]:
        out.append(
            f"<tr><td>{esc(s.label)}</td><td>{esc(s.state)}</td><td>{s.tries}</td>"
            f"<td>{s.ended_jobs}</td><td>{s.misses}</td></tr>"
        )
    out.append("</table>")
    if len(rows) > NOT_FINISHED_ROWS:
        out.append(f'<p class="note">… and {len(rows) - NOT_FINISHED_ROWS} more.</p>')
    out.append("</details>")
    return "".join(out)


def render(
    data: ReportData,
    overview: list[Chart],
    detail: list[tuple[SetData, Chart | None]],
    omitted_after: int | None = None,
    omitted: int = 0,
) -> str:
    """The whole page; ``omitted`` sets are skipped after the ``omitted_after``-th detail set."""
    title = f"farm report — {data.name}"
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">database <code>{esc(data.source)}</code> · generated '
        f"{esc(time.strftime('%Y-%m-%d %H:%M:%S'))} · {len(data.sets)} task sets</p>",
        "<h2>Summary</h2>",
    ]
    if not data.sets:
        body.append('<p class="note" id="empty">No task sets recorded in this database.</p>')
    body.append(summary_table(data))
    body += [img(c) for c in overview]
    body.append(not_finished_table(data))
    if detail:
        shown = f"all {len(detail)}" if not omitted else f"{len(detail)} of {len(data.sets)}"
        body.append(f"<h2>Task sets in detail ({shown})</h2>")
        body.append(
            '<p class="note">Gantt: one row per task, a bar per job from its start to its exit, '
            "coloured by exit type; ticks mark estimated releases, red crosses deadline misses. "
            "Right: response times (end &minus; release) per task, dashed line = the task's limit "
            "(criticaltime, else deadline).</p>"
        )
    for i, (s, chart) in enumerate(detail):
        if omitted and omitted_after == i:
            sets = "task set" if omitted == 1 else "task sets"
            body.append(f'<p class="note">… {omitted} {sets} not drawn in detail …</p>')
        body.append(set_section(s, chart))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
