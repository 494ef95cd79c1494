"""Uploaded binaries: decoded from base64 into a private directory of the agent.

A task whose ``pkg`` equals the name of an uploaded binary runs that file
(uploaded names take precedence over built-in workloads of the same name).
Names are plain file names: 1..64 characters of ``A-Z a-z 0-9 . _ -``, not
starting with a dot. Files are written with mode 0755 inside a 0700
directory, atomically (temp file + rename), so a running job never sees a
half-written file. They stay until the ``clear`` request or agent exit.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

#: matched with fullmatch: ``$`` would also accept a name followed by a newline
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}", re.ASCII)


class BadBinary(ValueError):
    """An upload the agent refuses (bad name, bad encoding)."""


class BinaryStore:
    """Named executables uploaded by the host."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._names: set[str] = set()

    def decode_all(self, uploads: object) -> dict[str, bytes]:
        """Check and decode ``{name: base64}`` without touching the disk."""
        if uploads is None:
            return {}
        if not isinstance(uploads, dict):
            raise BadBinary("binaries must be an object {name: base64 string}")
        out: dict[str, bytes] = {}
        for name, data in uploads.items():
            if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
                raise BadBinary(f"binary name {name!r} is not a plain file name")
            if not isinstance(data, str):
                raise BadBinary(f"binary {name!r} must be a base64 string")
            try:
                out[name] = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BadBinary(f"binary {name!r} is not valid base64: {exc}") from exc
        return out

    def put(self, name: str, data: bytes) -> Path:
        """Write one binary (replacing an older one of that name)."""
        path = self.root / name
        tmp = self.root / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o755)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        self._names.add(name)
        return path

    def names(self) -> frozenset[str]:
        """Names of the binaries currently uploaded."""
        return frozenset(self._names)

    def path(self, name: str) -> Path:
        """Where binary ``name`` lives."""
        return self.root / name

    def clear(self) -> None:
        """Forget and delete every uploaded binary."""
        for name in self._names:
            try:
                (self.root / name).unlink()
            except FileNotFoundError:
                pass
        self._names.clear()
