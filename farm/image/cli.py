"""Command line of the image builder: ``python -m farm.image build [--force]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from farm.errors import FarmError
from farm.image.builder import KERNEL_FLAVORS, build
from farm.image.cpio import COMPRESSIONS


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: build the image, print its ImageInfo as JSON; exit 1 on ImageError."""
    parser = argparse.ArgumentParser(prog="farm image", description="farm guest image")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build images/image.elf and images/initrd.img")
    p_build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p_build.add_argument("--out-dir", type=Path, default=Path("images"))
    p_build.add_argument("--compression", choices=COMPRESSIONS, default="none")
    p_build.add_argument(
        "--kernel",
        choices=KERNEL_FLAVORS,
        default="farm",
        help="farm: PREEMPT_RT built from linux-source (default, fast boot); "
        "debian: Debian's packaged RT kernel",
    )
    p_build.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        info = build(
            force=args.force,
            out_dir=args.out_dir,
            compression=args.compression,
            kernel=args.kernel,
        )
    except FarmError as exc:
        print(f"farm image: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info.to_dict(), indent=1))
    return 0
