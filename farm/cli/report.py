"""``farm report DB [--out DIR] [--detail N] [--open]``: HTML report with charts of a results.db.

DB is an SQLite file (SqliteMonitor) or a PostgreSQL URL (PostgresMonitor).
"""

from __future__ import annotations

from pathlib import Path

import click

from farm.cli.errors import fail
from farm.errors import FarmError


@click.command("report")
@click.argument("db")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory (default: report/ beside the database; ./report for a URL).",
)
@click.option(
    "--detail",
    type=int,
    default=12,
    show_default=True,
    help="Task sets drawn in detail (first and last halves).",
)
@click.option("--open", "open_it", is_flag=True, help="Open index.html in a browser afterwards.")
def report(db: str, out_dir: Path | None, detail: int, open_it: bool) -> None:
    """Write an HTML report (and its PNGs) of the results database DB (file or postgresql://)."""
    try:
        from farm.report.build import build_report
        from farm.report.data import is_url

        if out_dir is None:
            out_dir = Path("report") if is_url(db) else Path(db).parent / "report"
        index = build_report(db, out_dir, detail)
    except FarmError as exc:
        fail(exc)
    click.echo(str(index.resolve()))
    if open_it:
        click.launch(str(index))
