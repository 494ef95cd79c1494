"""Placeholder for ``farm doctor``: replaced by its implementation."""

import click


@click.command("doctor")
def doctor() -> None:
    """Check this machine for farm (not built yet)."""
    raise click.UsageError("farm doctor is not built yet")
