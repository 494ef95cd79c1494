"""``farm doctor``: print the checks of :mod:`farm.doctor` and the effective configuration."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from farm.cli.errors import EXIT_FAILED, EXIT_OK, fail
from farm.doctor import FAIL, PASS, WARN, Check, config_sources, run_checks
from farm.errors import FarmError


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print checks and configuration as JSON.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check this machine for farm (PASS/WARN/FAIL with a fix each); print the configuration."""
    path = (ctx.obj or {}).get("config") if isinstance(ctx.obj, dict) else None
    try:
        config, rows = config_sources(path)
    except FarmError as exc:
        fail(exc)
    checks = run_checks(config)
    ok = not any(c.status == FAIL for c in checks)
    if as_json:
        doc = {"ok": ok, "checks": [dataclasses.asdict(c) for c in checks], "config": rows}
        click.echo(json.dumps(doc, indent=2))
    else:
        _print(checks, rows)
    raise SystemExit(EXIT_OK if ok else EXIT_FAILED)


def _print(checks: list[Check], rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colour = {PASS: "green", WARN: "yellow", FAIL: "red"}
    table = Table(title="farm doctor")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        status = f"[{colour[c.status]}]{c.status}[/]"
        table.add_row(c.name, status, escape(c.detail), escape(c.fix or "-"))
    conf = Table(title="effective configuration")
    for col in ("key", "value", "source"):
        conf.add_column(col, overflow="fold")
    for row in rows:
        conf.add_row(row["key"], escape(str(row["value"])), escape(row["source"]))
    Console().print(table, conf)
