"""``farm report DB [--out DIR] [--detail N] [--open]``: HTML report with charts of a results.db."""

from __future__ import annotations

from pathlib import Path

import click

from farm.cli.errors import fail
from farm.errors import FarmError


@click.command("report")
@click.argument("db", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory (default: report/ beside the database).",
)
@click.option(
    "--detail",
    type=int,
    default=12,
    show_default=True,
    help="Task sets drawn in detail (first and last halves).",
)
@click.option("--open", "open_it", is_flag=True, help="Open index.html in a browser afterwards.")
def report(db: Path, out_dir: Path | None, detail: int, open_it: bool) -> None:
    """Write an HTML report (and its PNGs) of the SqliteMonitor database DB."""
    from farm.report.build import build_report

    try:
        index = build_report(db, out_dir if out_dir is not None else db.parent / "report", detail)
    except FarmError as exc:
        fail(exc)
    click.echo(str(index.resolve()))
    if open_it:
        click.launch(str(index))
