"""``farm list``: the task sets, monitors or sessions farm knows, one line each."""

from __future__ import annotations

import click


@click.command("list")
@click.option("--tasksets", "what", flag_value="tasksets", default=True)
@click.option("--monitors", "what", flag_value="monitors")
@click.option("--sessions", "what", flag_value="sessions")
def list_(what: str) -> None:
    """List task sets, monitors or sessions with their first docstring line."""
    import importlib

    mod = importlib.import_module(f"farm.{'session' if what == 'sessions' else what}")
    for name, doc in mod.available():
        if what == "tasksets" and getattr(mod.resolve(name), "until_stopped", False):
            doc += " (not for `farm run`: never ends by itself)"
        click.echo(f"{name:32} {doc}")
