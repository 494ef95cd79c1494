"""Placeholder for ``farm status``: replaced by its implementation."""

import click


@click.command("status")
def status() -> None:
    """Show a running farm's machines and jobs (not built yet)."""
    raise click.UsageError("farm status is not built yet")
