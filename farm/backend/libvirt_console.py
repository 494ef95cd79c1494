"""Copy a libvirt domain's serial console into a local file over a libvirt stream.

Used for remote hypervisors (no local pty to log) and on request locally.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import BinaryIO

import libvirt

from farm.errors import BackendError


class ConsoleStream:
    """Copies a domain's serial console into a local file over a libvirt stream."""

    _EVENTS = (
        libvirt.VIR_STREAM_EVENT_READABLE
        | libvirt.VIR_STREAM_EVENT_ERROR
        | libvirt.VIR_STREAM_EVENT_HANGUP
    )

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain, path: Path) -> None:
        self._lock = threading.Lock()
        self._file: BinaryIO | None = path.open("wb", buffering=0)
        self._stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            dom.openConsole(None, self._stream, 0)
            self._stream.eventAddCallback(self._EVENTS, self._on_event, None)
        except libvirt.libvirtError as exc:
            self.close()
            raise BackendError(f"cannot open the console of {dom.name()}: {exc}") from exc

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            try:
                data = stream.recv(65536)
            except libvirt.libvirtError:
                data = b""
            if isinstance(data, bytes) and data:
                with self._lock:
                    if self._file is not None:
                        self._file.write(data)
                return
            if data == -2:  # would block
                return
        self.close()  # EOF, error or hangup: the guest is gone

    def close(self) -> None:
        """Stop copying (idempotent); the file keeps what arrived."""
        with self._lock:
            out, self._file = self._file, None
        if out is None:
            return
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.eventRemoveCallback()
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()
        out.close()
