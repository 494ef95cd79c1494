"""Live terminal view of a running Distributor (rich): job progress and machine table."""

from __future__ import annotations

import logging
import time
from typing import Any

from rich import box, get_console
from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

COMPACT: dict[str, Any] = {
    "box": box.SIMPLE_HEAD,
    "pad_edge": False,
    "collapse_padding": True,
    "show_edge": False,
}


def short_set(key: object) -> str:
    """A running set's key as a person reads it: ``pkg.mod.Class:hash#3`` -> ``Class#3``."""
    if not key:
        return "-"
    text = str(key)
    name, _, rest = text.partition(":")
    index = rest.rpartition("#")[2] if "#" in rest else ""
    return name.rpartition(".")[2] + (f"#{index}" if index else "")


def machine_table(machines: list[dict[str, Any]], compact: bool = False) -> Table:
    """One row per machine; addresses never cut, set keys shortened (full ones in --json).

    ``compact``: no column rules nor edge padding, so that it fits 80 columns (``farm status``).
    """
    table = Table(title="machines", **(COMPACT if compact else {}))
    for col in ("name", "state", "address", "current set", "uptime", "restarts", "sets"):
        table.add_column(col, no_wrap=col in ("name", "address"), overflow="fold")
    for m in sorted(machines, key=lambda m: str(m.get("name"))):
        table.add_row(
            str(m.get("name")),
            str(m.get("state")) + (" (retiring)" if m.get("retiring") else ""),
            m.get("address") or "-",
            short_set(m.get("current")),
            f"{float(m.get('uptime') or 0):.0f}s",
            str(m.get("restarts", 0)),
            str(m.get("sets_done", "-")),
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
            live.update(Group(progress, machine_table(dist.machines())))
            if done or dist.stalled():  # stalled: no machine can boot, nothing will change
                break
    live.console.line()  # the caller's summary goes below the table, not glued to it
