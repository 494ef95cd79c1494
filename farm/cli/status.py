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

    up = time.time() - float(doc.get("started") or time.time())
    header = (
        f"farm pid {doc.get('pid')} up {up:.0f}s, backend {doc.get('backend')}, "
        f"network {doc.get('network')}, limit {doc.get('limit')}, state {doc.get('state_dir')}"
    )
    out: list[Any] = [header]
    machines = Table(title="machines")
    for col in ("name", "state", "address", "current set", "uptime", "restarts", "sets"):
        machines.add_column(col)
    for m in sorted(doc.get("machines", []), key=lambda m: str(m.get("name"))):
        machines.add_row(
            str(m.get("name")),
            str(m.get("state")) + (" (retiring)" if m.get("retiring") else ""),
            m.get("address") or "-",
            m.get("current") or "-",
            f"{float(m.get('uptime') or 0):.0f}s",
            str(m.get("restarts", 0)),
            str(m.get("sets_done", "-")),
        )
    out.append(machines)
    jobs = Table(title="jobs")
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
        leases = Table(title="leases")
        lease_cols = ("name", "mac", "ip", "kind", "state")
        for col in lease_cols:
            leases.add_column(col)
        for row in doc["leases"]:
            leases.add_row(*(str(row.get(c) or "-") for c in lease_cols))
        out.append(leases)
    if doc.get("hosts"):
        hosts = Table(title="hosts")
        cols = list(dict.fromkeys(k for h in doc["hosts"] for k in h))
        for col in cols:
            hosts.add_column(col)
        for h in doc["hosts"]:
            hosts.add_row(*(str(h.get(c, "-")) for c in cols))
        out.append(hosts)
    return out
