"""``python -m farm.image ARGS``: an alias of ``farm image ARGS`` (one CLI: same flags, same
exit codes, 2 for bad input)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from farm.cli import main as farm_main


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``farm image`` with ``argv`` (default: sys.argv[1:]) and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        farm_main.main(["image", *args], prog_name="farm")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
