"""Placeholder for ``farm netjobs``: replaced by its implementation."""

import click


@click.command("netjobs")
def netjobs() -> None:
    """Run synchronised NetJobs tests (not built yet)."""
    raise click.UsageError("farm netjobs is not built yet")
