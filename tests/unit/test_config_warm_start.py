"""warm_start: on by default, a bool, read from farm.toml; backends that cannot warm start
boot cold and say why once (INFO), never refuse the config."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from farm.backend import libvirt as lv
from farm.backend import libvirt_xml as lx
from farm.backend.qemu import QemuBackend
from farm.backend.snapshot_net import TEMPLATE_MAC
from farm.bridge.bridge import plan_for
from farm.bridge.dhcp import RESERVED_OFFSET, mac_for
from farm.config import FarmConfig
from farm.errors import ConfigError, NetworkError
from farm.profile import MachineProfile

WARM_OFF = "warm start off, guests boot cold"


def test_warm_start_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="warm_start must be true or false"):
        FarmConfig(warm_start=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["qemu", "libvirt", "local"])
@pytest.mark.parametrize("network", ["user", "bridge"])
def test_warm_start_is_on_by_default_and_accepted_everywhere(backend: str, network: str) -> None:
    config = FarmConfig(backend=backend, network=network)
    assert config.warm_start is True


def test_warm_start_from_farm_toml(tmp_path: Path) -> None:
    toml = tmp_path / "farm.toml"
    toml.write_text('backend = "qemu"\nwarm_start = false\n')
    config = FarmConfig.load(toml)
    assert config.warm_start is False and config.backend == "qemu"


def libvirt_backend(tmp_path: Path, **config: object) -> lv.LibvirtBackend:
    return lv.LibvirtBackend(FarmConfig(state_dir=tmp_path, **config), MachineProfile(accel="tcg"))  # type: ignore[arg-type]


def test_libvirt_local_user_net_warm_starts_by_default(tmp_path: Path) -> None:
    assert libvirt_backend(tmp_path).warm is not None
    assert libvirt_backend(tmp_path, network="bridge").warm is not None  # snapshot_net
    assert libvirt_backend(tmp_path, warm_start=False).warm is None
    config = FarmConfig(state_dir=tmp_path)
    assert lv.LibvirtBackend(config, MachineProfile(), warm_start=False).warm is None
    assert lv.LibvirtBackend(config.replace(warm_start=False), MachineProfile()).warm is None


@pytest.mark.parametrize(
    ("config", "profile", "why"),
    [
        ({"libvirt_uri": "qemu+ssh://hv1/system"}, MachineProfile(), "not on this host"),
        ({}, MachineProfile(accel="tcg", farm_cmdline=False), "not farm's own guest image"),
    ],
)
def test_libvirt_backends_that_cannot_warm_start_boot_cold_and_say_why_once(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    config: dict[str, object],
    profile: MachineProfile,
    why: str,
) -> None:
    caplog.set_level(logging.INFO, logger="farm.backend.libvirt")
    backend = lv.LibvirtBackend(FarmConfig(state_dir=tmp_path, **config), profile)  # type: ignore[arg-type]
    assert backend.warm is None
    lines = [r for r in caplog.records if WARM_OFF in r.getMessage()]
    assert len(lines) == 1 and why in lines[0].getMessage(), caplog.text
    assert lines[0].levelno == logging.INFO


def test_qemu_warm_starts_on_both_networks_and_falls_back_once_for_a_foreign_image(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="farm.backend.qemu")
    config = FarmConfig(state_dir=tmp_path, backend="qemu", network="bridge")
    profile = MachineProfile(accel="tcg")
    assert QemuBackend(config, profile).warm_start is True  # bridged: snapshot_net
    assert QemuBackend(config.replace(network="user"), profile).warm_start is True
    assert QemuBackend(config.replace(warm_start=False), profile).warm_start is False
    foreign = MachineProfile(accel="tcg", farm_cmdline=False)
    assert QemuBackend(config, foreign).warm_start is False
    assert sum(WARM_OFF in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ConfigError):  # asked for explicitly: refused, never silently dropped
        QemuBackend(config, foreign, warm_start=True)


def test_remote_cold_boot_key_goes_over_a_channel_stream(tmp_path: Path) -> None:
    """A remote hypervisor: no token on the kernel command line, a path-less identity channel."""
    backend = libvirt_backend(tmp_path, libvirt_uri="qemu+ssh://hv1/system")
    assert backend.identity_stream is True
    spec = backend._spec("qemu1", "secret-token", tmp_path / "c.log", 40000)
    assert "secret-token" not in spec.cmdline and "farm.identity=boot" in spec.cmdline
    assert spec.identity_socket is None and spec.identity_channel
    source = ET.fromstring(lx.domain_xml(spec)).find("devices/channel/source")
    assert source is not None and source.get("mode") == "bind" and source.get("path") is None
    assert libvirt_backend(tmp_path).identity_stream is False  # local: the unix socket


def test_warm_domain_waits_for_its_state_and_identity(tmp_path: Path) -> None:
    backend = libvirt_backend(tmp_path)
    warm = backend._spec("qemu1", "secret-token", None, 40000, mode="warm")
    template = backend._spec("qemu1", "secret-token", None, 40000, mode="template")
    assert "farm.identity=wait" in warm.cmdline and "secret-token" not in warm.cmdline
    assert warm.extra_args[-2:] == ("-incoming", "defer")
    assert "-incoming" not in template.extra_args and template.cmdline == warm.cmdline


def test_warm_start_on_the_bridged_network_is_accepted() -> None:
    """Restored guests take their own MAC and IP (snapshot_net): no longer refused."""
    config = FarmConfig(warm_start=True, backend="qemu", network="bridge")
    assert config.warm_start and config.network == "bridge"


def test_libvirt_bridged_warm_guests_take_their_own_address_from_their_identity(
    tmp_path: Path,
) -> None:
    """Template and restored domains boot with the template's static address; each restored
    machine's identity carries its reserved MAC/IP."""
    backend = libvirt_backend(tmp_path, network="bridge", bridge_subnet="10.77.0.0/24")
    warm = backend.warm
    assert warm is not None
    plan = plan_for(backend.config)
    template = f"farm.ip={plan.subnet.network_address + RESERVED_OFFSET}/24,{plan.bridge_ip}"
    spec = backend._spec("qemu3", "secret-token", None, 0, mode="warm")
    assert template in spec.cmdline.split() and "secret-token" not in spec.cmdline
    assert backend._spec("qemu3", "t", None, 0).cmdline.count("farm.ip=") == 0  # cold: DHCP
    assert warm.template_nic() == (TEMPLATE_MAC, plan.subnet.network_address + RESERVED_OFFSET)
    # (the real reservation brings br0 and dhcpd up: not in a unit test)
    backend._reservation = lambda name: (mac_for(3), plan.ip_for(3))  # type: ignore[method-assign]
    net = {"mac": mac_for(3), "ip": f"{plan.ip_for(3)}/24", "gw": str(plan.bridge_ip)}
    assert warm.net_identity("qemu3") == net
    assert libvirt_backend(tmp_path).warm.net_identity("qemu3") is None  # type: ignore[union-attr]


def test_libvirt_warm_start_turns_off_when_the_bridge_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """br0 or dhcpd failing while the template is made: warm start off, the spawn boots cold
    (and meets the same error there), never a crash in the warm path."""
    warm = libvirt_backend(tmp_path, network="bridge").warm
    assert warm is not None

    def fail() -> None:
        raise NetworkError("cannot create bridge br0")

    monkeypatch.setattr(warm, "ensure", fail)
    assert warm.snapshot() is None and "br0" in warm.off
