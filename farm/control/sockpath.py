"""UNIX socket paths longer than the kernel's 108-byte limit, reached through /proc/self/fd."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

#: sun_path holds 108 bytes including the terminating NUL
MAX_SUN_PATH = 107
SOCKET_NAME = "control.sock"


def socket_path(state_dir: Path) -> Path:
    """Where the Distributor of ``state_dir`` listens (``<state_dir>/control.sock``)."""
    return Path(state_dir).resolve() / SOCKET_NAME


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[str]:
    """A path string for bind()/connect() that fits sun_path, valid inside the block.

    Long paths go through an open descriptor of the parent directory
    (``/proc/self/fd/N/name``), which the kernel resolves like the real path.
    """
    text = str(path)
    if len(os.fsencode(text)) <= MAX_SUN_PATH:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
