"""Placeholder for ``farm report``: replaced by its implementation."""

import click


@click.command("report")
def report() -> None:
    """Write an HTML report from results.db (not built yet)."""
    raise click.UsageError("farm report is not built yet")
