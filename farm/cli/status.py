"""``farm status``: machines, jobs, leases and hosts of the farm running in this directory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from farm.cli.errors import fail
from farm.errors import FarmError


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
@click.option(
    "--socket",
    "sock",
    type=click.Path(dir_okay=False),
    default=None,
    help="Control socket to ask (default <state_dir>/control.sock of the config).",
)
@click.pass_context
def status(ctx: click.Context, as_json: bool, sock: str | None) -> None:
    """Show the machines, jobs, leases and hosts of a running farm."""
    from farm.config import FarmConfig
    from farm.control.client import ControlClient

    try:
        if sock is None:
            path = (ctx.obj or {}).get("config") if isinstance(ctx.obj, dict) else None
            client = ControlClient.for_state_dir(FarmConfig.load(path).state_dir)
        else:
            client = ControlClient(Path(sock))
        doc = client.status()
    except FarmError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    from rich.console import Console

    Console().print(*render(doc))


def render(doc: dict[str, Any]) -> list[Any]:
    """Rich renderables for a status document: a header line and one table per section."""
    from rich.table import Table

    from farm.view import COMPACT, machine_table

    up = time.time() - float(doc.get("started") or time.time())
    header = (
        f"farm pid {doc.get('pid')} up {up:.0f}s, backend {doc.get('backend')}, "
        f"network {doc.get('network')}, limit {doc.get('limit')}\nstate {doc.get('state_dir')}"
    )
    out: list[Any] = [header, machine_table(doc.get("machines", []), compact=True)]
    jobs = Table(title="jobs", **COMPACT)
    for col in ("job", "name", "finished", "total", "running", "stopped", "bad", "done"):
        jobs.add_column(col)
    for j in doc.get("jobs", []):
        jobs.add_row(
            str(j.get("job")),
            str(j.get("name")),
            str(j.get("finished")),
            "?" if j.get("total") is None else str(j.get("total")),
            str(j.get("in_flight", "-")),
            str(j.get("stopped")),
            str(j.get("bad")),
            "yes" if j.get("done") else "no",
        )
    out.append(jobs)
    if doc.get("leases"):
        leases = Table(title="leases", **COMPACT)
        lease_cols = ("name", "mac", "ip", "kind", "state")
        for col in lease_cols:
            leases.add_column(col)
        for row in doc["leases"]:
            leases.add_row(*(str(row.get(c) or "-") for c in lease_cols))
        out.append(leases)
    if doc.get("hosts"):
        out.extend(_hosts(doc["hosts"]))
    return out


def _cell(value: Any) -> str:
    """A status value as text: ``-`` for none, lists comma-joined, seconds rounded."""
    if value is None or value == "":
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, float):
        return f"{value:.0f}s" if value >= 1 else f"{value:.1f}s"
    return str(value)


def _hosts(hosts: list[dict[str, Any]]) -> list[Any]:
    """The hosts section: a table when its columns fit 80 columns (existing targets),
    else one ``field value`` block per host (hypervisors have a dozen fields)."""
    from rich import box
    from rich.table import Table

    from farm.view import COMPACT

    cols = list(dict.fromkeys(k for h in hosts for k in h))
    if len(cols) <= _WIDE:
        table = Table(title="hosts", **COMPACT)
        for col in cols:
            table.add_column(col, overflow="fold")
        for h in hosts:
            table.add_row(*(_cell(h.get(c)) for c in cols))
        return [table]
    out: list[Any] = []
    for h in hosts:
        title = f"host {_cell(h.get('name') or h.get('address'))}"
        block = Table(title=title, show_header=False, box=box.SIMPLE)
        block.add_column("field", style="bold", no_wrap=True)
        block.add_column("value", overflow="fold")
        for col in cols:
            if col not in ("name",):
                block.add_row(col, _cell(h.get(col)))
        out.append(block)
    return out


_WIDE = 7  # more host fields than this: one block per host instead of a table row
