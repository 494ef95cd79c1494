"""BackendBridge: a backend's bridged network is up from its first guest, down only if it did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from farm.bridge import bridge as bridge_mod
from farm.bridge.bridge import BackendBridge, BridgeNetwork
from farm.bridge.dhcp import DhcpPlan
from farm.config import FarmConfig


class FakeBridgeNetwork:
    """Records ensure_up/down; ``already_up`` plays a network someone else brought up."""

    instances: list[FakeBridgeNetwork] = []

    def __init__(self, already_up: bool) -> None:
        self.already_up = already_up
        self.calls: list[str] = []
        FakeBridgeNetwork.instances.append(self)

    def ensure_up(self) -> bool:
        self.calls.append("ensure_up")
        return not self.already_up

    def down(self) -> None:
        self.calls.append("down")


@pytest.fixture
def fake_net(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"already_up": False}
    FakeBridgeNetwork.instances = []

    def from_config(config: Any, *, registry: Any = None) -> FakeBridgeNetwork:
        return FakeBridgeNetwork(state["already_up"])

    monkeypatch.setattr(BridgeNetwork, "from_config", staticmethod(from_config))
    return state


def test_brought_up_once_and_down_at_close(tmp_path: Path, fake_net: dict[str, Any]) -> None:
    owner = BackendBridge(FarmConfig(state_dir=tmp_path, network="bridge"))
    first = owner.network()
    assert owner.network() is first  # one network per backend
    assert len(FakeBridgeNetwork.instances) == 1
    owner.close()
    assert FakeBridgeNetwork.instances[0].calls == ["ensure_up", "down"]
    owner.close()  # idempotent
    assert FakeBridgeNetwork.instances[0].calls == ["ensure_up", "down"]


def test_left_up_when_it_was_up_already(tmp_path: Path, fake_net: dict[str, Any]) -> None:
    fake_net["already_up"] = True  # e.g. `farm net up` by hand
    owner = BackendBridge(FarmConfig(state_dir=tmp_path, network="bridge"))
    owner.network()
    owner.close()
    assert FakeBridgeNetwork.instances[0].calls == ["ensure_up"]


def test_close_without_use_touches_nothing(tmp_path: Path, fake_net: dict[str, Any]) -> None:
    BackendBridge(FarmConfig(state_dir=tmp_path)).close()
    assert FakeBridgeNetwork.instances == []


def test_external_ensure_up_owns_only_a_bridge_it_created(tmp_path: Path) -> None:
    """With the user's dhcpd, a bridge that existed before is the user's: never taken down."""
    conf = tmp_path / "dhcpd.conf"
    plan = DhcpPlan.create(machines=2)
    conf.write_text(
        "\n".join(
            f"host {n} {{ hardware ethernet {m}; fixed-address {ip}; }}"
            for n, m, ip in plan.reservations()
        )
    )
    net = BridgeNetwork(plan, tmp_path, external_conf=conf)
    exists = {"br0": True}
    net.bridge.exists = lambda: exists["br0"]  # type: ignore[method-assign]
    net.bridge.create = lambda: exists.__setitem__("br0", True)  # type: ignore[method-assign]
    assert net.ensure_up() is False
    exists["br0"] = False
    assert net.ensure_up() is True
    assert exists["br0"] is True


def test_qemu_backend_uses_the_shared_helper(tmp_path: Path) -> None:
    from farm.backend.qemu import QemuBackend
    from farm.profile import MachineProfile

    backend = QemuBackend(FarmConfig(state_dir=tmp_path), MachineProfile())
    assert isinstance(backend._net, bridge_mod.BackendBridge)
    backend.close()
