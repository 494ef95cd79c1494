"""The host side of the identity port: a restored guest is asked to warm up first.

What a guest's /init does with ``{"warm_up": true}`` is tested in the vm tier
(tests/vm/test_qemu_spare.py); here the host's side of the exchange, and that
a plain qemu restore asks for it before the identity.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from farm.backend import identity_port, snapshot
from farm.backend.identity_port import SnapshotError

pytestmark = pytest.mark.unit


def test_warm_up_sends_its_line_and_waits_for_warm() -> None:
    host, guest = socket.socketpair()
    with host, guest:
        guest.sendall(identity_port.WARM + b"\n")
        identity_port.warm_up_guest(host, lambda: True, 5.0)
        assert guest.recv(100) == identity_port.WARM_UP
        assert json.loads(identity_port.WARM_UP) == {"warm_up": True}


def test_an_unexpected_answer_to_the_warm_up_is_a_snapshot_error() -> None:
    """An old image's /init would take the line for its identity: say so, then boot cold."""
    host, guest = socket.socketpair()
    with host, guest:
        guest.sendall(b"farm-identity: ok None\n")
        with pytest.raises(SnapshotError, match="to its warm-up"):
            identity_port.warm_up_guest(host, lambda: True, 5.0)


def test_restore_with_warm_up_asks_before_the_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class Port:
        def __enter__(self) -> Port:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(snapshot, "_connect", lambda *a: Port())
    monkeypatch.setattr(snapshot, "resume", lambda *a: calls.append("resume"))
    monkeypatch.setattr(snapshot, "warm_up_guest", lambda *a: calls.append("warm_up"))
    monkeypatch.setattr(snapshot, "_send_identity", lambda *a: calls.append("identity"))
    snap: Any = object()
    snapshot.restore(snap, tmp_path, "qemu1", "k" * 64, lambda: True, warm_up=True)
    assert calls == ["resume", "warm_up", "identity"]
    calls.clear()
    snapshot.restore(snap, tmp_path, "qemu1", "k" * 64, lambda: True)
    assert calls == ["resume", "identity"]


def test_the_qemu_backend_warms_up_a_plain_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from farm.backend.qemu import QemuBackend
    from farm.config import FarmConfig

    seen: dict[str, Any] = {}

    class Guest:
        run_dir = tmp_path
        nic = None
        log = __import__("logging").getLogger("test")

        class process:
            qmp = None

        def alive(self) -> bool:
            return True

        def destroy(self) -> None:
            pass

    backend = QemuBackend(FarmConfig(state_dir=tmp_path, network="user"), warm_start=True)
    monkeypatch.setattr(backend, "_spawn", lambda *a, **k: Guest())
    monkeypatch.setattr("farm.backend.qemu.QemuGuest", Guest)
    monkeypatch.setattr(snapshot, "restore", lambda *a, **k: seen.update(k))
    snap: Any = type("Snap", (), {"path": tmp_path / "s.bin"})()
    backend._restore("qemu1", "k" * 64, snap)
    assert seen.get("warm_up") is True
