"""Warm start with shared memory: restored guests map the template's RAM copy-on-write.

The template guest's RAM is a ``memory-backend-file`` with ``share=on`` on the
file ``<key>.ram`` next to the snapshot, so when farm stops the template that
file holds the guest's memory. The snapshot (``<key>.bin``) is then saved with
the ``x-ignore-shared`` migration capability: it holds the device state only,
not the RAM. A restored guest maps the same file with ``share=off``
(``MAP_PRIVATE``) and loads the device state with ``x-ignore-shared`` too:
every page it only reads is the page cache's one copy, shared by all restored
guests; a page it writes becomes its own copy and never reaches the file. N
idle guests thus cost one template's RAM plus what each of them wrote since.

Restored guests' QEMUs start with transparent huge pages off (:func:`no_thp`):
their RAM is this file mapping, which gets none anyway, and THP would only back
QEMU's small ROM blocks (the ACPI tables' 2 MiB block, ~100 KiB used) and the
TCG translation buffer with whole 2 MiB pages.

The file must never change while guests map it (a private mapping still sees
file changes in pages it has not written): a new template writes a new file
and renames it over the old one, whose inode lives on as long as guests map it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: id of the template's RAM object (``-machine memory-backend=`` names it)
RAM_ID = "farmram"
_EVENTS = {"capability": "events", "state": True}
_IGNORE_SHARED = {"capability": "x-ignore-shared", "state": True}
_intact: set[tuple[str, int, int, str]] = set()  # RAM files whose SHA256 matched
_PR_SET_THP_DISABLE, _PR_GET_THP_DISABLE = 41, 42  # linux/prctl.h
_thp_lock = threading.Lock()
_thp_users = 0  # no_thp() blocks open; the flag is set while > 0
_thp_was_off = False  # the process had THP off before the first block


def ram_path(snapshot_path: Path) -> Path:
    """The RAM file of the snapshot at ``snapshot_path`` (``<key>.ram``)."""
    return snapshot_path.with_suffix(".ram")


def part_path(ram: Path) -> Path:
    """Where a template being built writes its RAM (``<key>.ram.part``, pruned if left)."""
    return ram.with_name(ram.name + ".part")


def ram_args(path: Path, memory_mib: int, shared: bool) -> list[str]:
    """QEMU arguments putting the guest's RAM in ``path``: shared (template) or private."""
    mem = str(path).replace(",", ",,")
    share = "on" if shared else "off"
    return [
        "-object",
        f"memory-backend-file,id={RAM_ID},size={int(memory_mib)}M,mem-path={mem},share={share}",
        "-machine",
        f"memory-backend={RAM_ID}",
    ]


def capabilities(ram: Path | None) -> list[dict[str, Any]]:
    """Migration capabilities for saving/loading: events, plus x-ignore-shared with a RAM file."""
    return [_EVENTS, _IGNORE_SHARED] if ram is not None else [_EVENTS]


def sha256(path: Path) -> str:
    """SHA256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def describe(ram: Path) -> dict[str, Any]:
    """The metadata recorded for a finished RAM file: its size and SHA256."""
    return {"ram_size": ram.stat().st_size, "ram_sha256": sha256(ram)}


def intact(ram: Path, meta: dict[str, Any]) -> bool:
    """True if ``ram`` has the size and SHA256 recorded in ``meta`` (False if missing).

    A file once found intact is not hashed again until its size or mtime changes.
    """
    try:
        st = ram.stat()
    except OSError:
        return False
    stamp = (str(ram), st.st_size, st.st_mtime_ns, str(meta.get("ram_sha256")))
    if stamp in _intact:
        return True
    if st.st_size != int(meta.get("ram_size", -1)) or sha256(ram) != meta.get("ram_sha256"):
        return False
    _intact.add(stamp)
    return True


def discard(ram: Path | None) -> None:
    """Remove a RAM file if any (guests still mapping it keep its inode)."""
    if ram is not None:
        with contextlib.suppress(OSError):
            ram.unlink()


def _prctl(option: int, value: int = 0) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(option, value, 0, 0, 0))


@contextlib.contextmanager
def no_thp() -> Iterator[None]:
    """Processes forked inside this block start with transparent huge pages off.

    ``prctl(PR_SET_THP_DISABLE)`` is inherited by fork and kept across exec, so
    QEMU (started through screen) gets it; farm's own flag is restored when the
    last open block ends. Where prctl fails (not Linux), a no-op.
    """
    global _thp_users, _thp_was_off
    with _thp_lock:
        if _thp_users == 0:
            try:
                _thp_was_off = _prctl(_PR_GET_THP_DISABLE) == 1
                if not _thp_was_off and _prctl(_PR_SET_THP_DISABLE, 1) != 0:
                    log.debug("PR_SET_THP_DISABLE failed: errno %d", ctypes.get_errno())
            except (OSError, AttributeError) as exc:  # no libc prctl
                log.debug("no prctl: %s", exc)
                _thp_was_off = True  # nothing to undo
        _thp_users += 1
    try:
        yield
    finally:
        with _thp_lock:
            _thp_users -= 1
            if _thp_users == 0 and not _thp_was_off:
                _prctl(_PR_SET_THP_DISABLE, 0)
