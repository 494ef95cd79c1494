"""``farm image build``: build the guest image (``python -m farm.image`` is the same builder)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from farm.cli.errors import fail
from farm.errors import FarmError


@click.group("image")
def image() -> None:
    """Build and inspect the guest image."""


@image.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if nothing changed.")
@click.option("--out", type=click.Path(file_okay=False), default="images", show_default=True)
@click.option(
    "--kernel",
    type=click.Choice(["farm", "debian"]),
    default="farm",
    show_default=True,
    help="farm: PREEMPT_RT built from linux-source with farm's config (boots ~1 s "
    "faster); debian: Debian's packaged RT kernel and its modules.",
)
def image_build(force: bool, out: str, kernel: str) -> None:
    """Build images/image.elf and images/initrd.img (cached)."""
    from farm.image import build

    try:
        info = build(force=force, out_dir=Path(out), kernel=kernel)
    except FarmError as exc:
        fail(exc)
    click.echo(json.dumps(info.to_dict() if hasattr(info, "to_dict") else str(info), indent=2))
