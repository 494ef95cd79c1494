"""``farm image build``: build the guest image; ``python -m farm.image`` is an alias of it."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import click

from farm.cli.errors import fail
from farm.errors import FarmError

KERNELS = ("farm", "debian")  # farm.image.builder.KERNEL_FLAVORS (not imported: a slow import)
COMPRESSIONS = ("none", "gzip", "zstd", "xz")  # farm.image.cpio.COMPRESSIONS


@contextlib.contextmanager
def _progress() -> Iterator[None]:
    """The builder's steps on stderr at INFO (a kernel compile takes minutes), once each."""
    logger = logging.getLogger("farm.image")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("farm image: %(message)s"))
    saved = logger.level, logger.propagate
    logger.setLevel(min(logging.INFO, logging.getLogger().getEffectiveLevel()))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@click.group("image")
def image() -> None:
    """Build and inspect the guest image."""


@image.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if nothing changed.")
@click.option(
    "--out",
    "--out-dir",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write the image [default: the checkout's images/, installed: "
    "$XDG_CACHE_HOME/farm/images].",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Build cache (downloads, compiled kernel, rootfs) [default: $FARM_IMAGE_CACHE, "
    "else OUT/cache]; point it at another image's cache to reuse its compiled kernel.",
)
@click.option(
    "--kernel",
    type=click.Choice(KERNELS),
    default="farm",
    show_default=True,
    help="farm: PREEMPT_RT built from linux-source with farm's config (boots ~1 s "
    "faster); debian: Debian's packaged RT kernel and its modules.",
)
@click.option(
    "--compression",
    type=click.Choice(COMPRESSIONS),
    default="none",
    show_default=True,
    help="Compression of the initrd.",
)
def image_build(
    force: bool, out: str | None, cache: str | None, kernel: str, compression: str
) -> None:
    """Build image.elf and initrd.img (cached); print what was built as JSON."""
    from farm.image import build

    try:
        with _progress():
            info = build(
                force=force,
                out_dir=None if out is None else Path(out),
                cache_dir=None if cache is None else Path(cache),
                kernel=kernel,
                compression=compression,
            )
    except FarmError as exc:
        fail(exc)
    click.echo(json.dumps(info.to_dict(), indent=2))
