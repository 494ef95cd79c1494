"""Live terminal view of a running Distributor (rich): job progress and machine table."""

from __future__ import annotations

import logging
import time
from typing import Any

from rich import get_console
from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


def _machine_table(machines: list[dict[str, Any]]) -> Table:
    table = Table(title="machines", expand=False)
    for col in ("name", "state", "address", "current set", "uptime", "restarts", "sets"):
        table.add_column(col)
    for m in sorted(machines, key=lambda m: m["name"]):
        table.add_row(
            m["name"],
            m["state"] + (" (retiring)" if m["retiring"] else ""),
            m["address"] or "-",
            m["current"] or "-",
            f"{m['uptime']:.0f}s",
            str(m["restarts"]),
            str(m["sets_done"]),
        )
    return table


def _log_console() -> Console:
    """The console log records print on (the CLI's RichHandler), so the view shares it:
    rich then prints each record above the live view instead of tearing it."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RichHandler):
            return handler.console
    return get_console()


def live_view(dist: Any, refresh: float = 0.5) -> None:
    """Show progress until every job is done (returns then)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    bars: dict[int, Any] = {}
    t0 = time.monotonic()
    with Live(console=_log_console(), refresh_per_second=4, transient=False) as live:
        while True:
            done = dist.wait_finished(timeout=refresh)
            for job in dist.jobs():
                if job["job"] not in bars:
                    bars[job["job"]] = progress.add_task(job["name"], total=job["total"], rate="")
                elapsed = max(time.monotonic() - t0, 1e-6)
                rate = f"{(job['finished'] - job['resumed_from']) / elapsed:.2f} sets/s"
                progress.update(bars[job["job"]], completed=job["finished"] + job["bad"], rate=rate)
            live.update(Group(progress, _machine_table(dist.machines())))
            if done or dist.stalled():  # stalled: no machine can boot, nothing will change
                break
    live.console.line()  # the caller's summary goes below the table, not glued to it
