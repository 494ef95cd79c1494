"""``farm console NAME``: attach to a guest's serial console through screen."""

from __future__ import annotations

import click

from farm.cli.errors import fail
from farm.errors import ConfigError


@click.command("console")
@click.argument("name")
def console(name: str) -> None:
    """Attach to guest NAME's console (screen -xr NAME)."""
    import os
    import shutil

    screen = shutil.which("screen")
    if screen is None:
        fail(ConfigError("screen is not installed (apt-get install screen)"))
    os.execv(screen, [screen, "-xr", name])
