"""``farm console NAME``: attach to a guest's serial console through screen.

Every farm names its screen sessions after the seed's ``qemuN``, so a bare
``screen -xr qemu1`` is ambiguous when two farms run; ``farm console qemu1``
resolves the farm of the current config (its state dir's PID records) and
attaches to that farm's session by PID (``screen -xr PID.qemu1``).
"""

from __future__ import annotations

from pathlib import Path

import click

from farm.cli.errors import fail
from farm.errors import ConfigError


def session_of(state_dir: Path, name: str) -> str:
    """``PID.NAME``: the screen session of machine ``name`` in the farm of ``state_dir``."""
    import psutil

    from farm.procs import ProcessRegistry

    entries = ProcessRegistry(state_dir).entries()
    entry = entries.get(f"{name}.screen")
    pid = entry.get("pid") if entry else None
    if isinstance(pid, int) and psutil.pid_exists(pid):
        return f"{pid}.{name}"
    running = sorted(n.removesuffix(".screen") for n in entries if n.endswith(".screen"))
    raise ConfigError(
        f"no console {name!r} in the farm of {state_dir.resolve()}"
        + (f" (consoles: {', '.join(running)})" if running else " (is farm running here?)")
    )


@click.command("console")
@click.argument("name")
@click.pass_context
def console(ctx: click.Context, name: str) -> None:
    """Attach to guest NAME's console (e.g. qemu1) in the farm of the current config."""
    import os
    import shutil

    from farm.config import FarmConfig
    from farm.errors import FarmError

    screen = shutil.which("screen")
    if screen is None:
        fail(ConfigError("screen is not installed (apt-get install screen)"))
    try:
        path = (ctx.obj or {}).get("config") if isinstance(ctx.obj, dict) else None
        session = session_of(FarmConfig.load(path).state_dir, name)
    except FarmError as exc:
        fail(exc)
    os.execv(screen, [screen, "-xr", session])
