"""Reproducible initramfs archives: an in-memory file tree written as newc cpio.

Entries are written sorted by path with a fixed mtime, uid/gid 0 and
sequential inode numbers, so the same tree always gives the same bytes.
"""

from __future__ import annotations

import gzip
import lzma
import stat
import subprocess
from dataclasses import dataclass
from pathlib import PurePosixPath

from farm.errors import ImageError

#: mtime of every entry (any fixed value works; 0 is what SOURCE_DATE_EPOCH=0 gives).
FIXED_MTIME = 0
COMPRESSIONS = ("gzip", "zstd", "xz", "none")


@dataclass(frozen=True)
class Entry:
    """One archive member: full mode (type bits included), data or link target, device."""

    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


class Tree:
    """A guest root file system under construction (paths relative, no leading /)."""

    def __init__(self) -> None:
        self.entries: dict[PurePosixPath, Entry] = {}

    @staticmethod
    def _key(path: str | PurePosixPath) -> PurePosixPath:
        key = PurePosixPath(str(path).lstrip("/"))
        if not key.parts or ".." in key.parts:
            raise ImageError(f"bad path in image: {path!r}")
        return key

    def _parents(self, key: PurePosixPath) -> None:
        for parent in reversed(key.parents[:-1]):
            existing = self.entries.get(parent)
            if existing is None:
                self.entries[parent] = Entry(stat.S_IFDIR | 0o755)
            elif not stat.S_ISDIR(existing.mode):
                raise ImageError(f"{parent} is not a directory in the image (needed for {key})")

    def dir(self, path: str | PurePosixPath, mode: int = 0o755) -> None:
        """Add a directory (and its parents)."""
        key = self._key(path)
        self._parents(key)
        self.entries[key] = Entry(stat.S_IFDIR | mode)

    def file(self, path: str | PurePosixPath, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file."""
        key = self._key(path)
        self._parents(key)
        self.entries[key] = Entry(stat.S_IFREG | (mode & 0o7777), data)

    def symlink(self, path: str | PurePosixPath, target: str) -> None:
        """Add a symbolic link."""
        key = self._key(path)
        self._parents(key)
        self.entries[key] = Entry(stat.S_IFLNK | 0o777, target.encode())

    def node(self, path: str | PurePosixPath, kind: int, major: int, minor: int) -> None:
        """Add a device node (``kind`` is stat.S_IFCHR or stat.S_IFBLK)."""
        key = self._key(path)
        self._parents(key)
        self.entries[key] = Entry(kind | 0o600, rdev=(major, minor))

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str | PurePosixPath) and self._key(path) in self.entries

    def size(self) -> int:
        """Total bytes of file contents."""
        return sum(len(e.data) for e in self.entries.values())

    def cpio(self) -> bytes:
        """The tree as an uncompressed newc cpio archive."""
        out = bytearray()
        for ino, key in enumerate(sorted(self.entries, key=lambda k: k.parts), start=1):
            entry = self.entries[key]
            nlink = 2 if stat.S_ISDIR(entry.mode) else 1
            _member(out, str(key), ino, entry.mode, nlink, entry.data, entry.rdev)
        _member(out, "TRAILER!!!", 0, 0, 1, b"", (0, 0))
        return bytes(out)


def _member(
    out: bytearray, name: str, ino: int, mode: int, nlink: int, data: bytes, rdev: tuple[int, int]
) -> None:
    raw_name = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, FIXED_MTIME, len(data), 0, 0, *rdev, len(raw_name), 0)
    out += b"070701" + b"".join(b"%08X" % f for f in fields)
    out += raw_name
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)


def compress(data: bytes, how: str) -> bytes:
    """Compress an initramfs the way the kernel can unpack it (reproducibly)."""
    if how == "none":
        return data
    if how == "gzip":
        return gzip.compress(data, compresslevel=9, mtime=0)
    if how == "xz":
        # the kernel's xz decoder wants CRC32 checks, not the default CRC64
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    if how == "zstd":
        try:
            proc = subprocess.run(
                ["zstd", "-q", "-19", "-c"], input=data, capture_output=True, timeout=300
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ImageError(f"zstd failed: {exc}") from exc
        if proc.returncode != 0:
            raise ImageError(f"zstd failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout
    raise ImageError(f"unknown initrd compression {how!r} (one of {', '.join(COMPRESSIONS)})")
