"""libvirt conventions: LIBVIRT_DEFAULT_URI, per-farm domain names and titles, AUTODESTROY."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest

from farm.backend import libvirt as lv
from farm.backend import libvirt_host as lh
from farm.backend import libvirt_xml as lx
from farm.backend import naming
from farm.config import FarmConfig
from farm.errors import ConfigError
from farm.profile import MachineProfile


def test_libvirt_default_uri_used_when_config_gives_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///system")
    assert FarmConfig(state_dir=tmp_path).resolved_libvirt_uri == "qemu:///system"
    given = FarmConfig(state_dir=tmp_path, libvirt_uri="qemu+ssh://hv/system")
    assert given.resolved_libvirt_uri == "qemu+ssh://hv/system"  # the config wins
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "xen:///system")
    with pytest.raises(ConfigError, match="qemu"):
        _ = FarmConfig(state_dir=tmp_path).resolved_libvirt_uri
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI")
    assert lx.embed_root(FarmConfig(state_dir=tmp_path).resolved_libvirt_uri) is not None


def test_domain_names_are_unique_per_farm_and_keep_qemun(tmp_path: Path) -> None:
    a, b = naming.domain_name(tmp_path / "a", "qemu1"), naming.domain_name(tmp_path / "b", "qemu1")
    assert a != b and a.startswith("farm-") and a.endswith("-qemu1") and b.endswith("-qemu1")
    assert naming.domain_name(tmp_path / "a", "qemu1") == a  # stable for one farm
    assert naming.domain_name(tmp_path / "a", "qemu2") == a.removesuffix("1") + "2"


def spec_xml(tmp_path: Path, **config: Any) -> ET.Element:
    config_ = FarmConfig(state_dir=tmp_path, **config)
    backend = lv.LibvirtBackend(config_, MachineProfile(accel="tcg"))
    spec = backend._spec("qemu1", "tok", tmp_path / "qemu1.console.log", 40000)
    return ET.fromstring(lx.domain_xml(spec))


def test_domain_xml_names_and_titles_the_owning_farm(tmp_path: Path) -> None:
    root = spec_xml(tmp_path, libvirt_uri="qemu:///system")
    assert root.findtext("name") == naming.domain_name(tmp_path, "qemu1")
    title = root.findtext("title") or ""
    assert "qemu1" in title and str(tmp_path.resolve()) in title and str(os.getpid()) in title


class RecordingConnection:
    def __init__(self) -> None:
        self.flags: list[int] = []

    def createXML(self, xml: str, flags: int) -> str:
        self.flags.append(flags)
        return ET.fromstring(xml).findtext("name") or ""


class FakeBridgeNet:
    """Fake of the backend's bridge: a unit test must not start br0 and dhcpd on the host."""

    class _Network:
        class plan:  # mirrors BridgeNetwork.plan
            bridge = "fakebr0"

    def network(self) -> Any:
        return self._Network()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("bridged", [False, True])
def test_autodestroy_for_every_guest_on_a_daemon(tmp_path: Path, bridged: bool) -> None:
    config = FarmConfig(state_dir=tmp_path, libvirt_uri="qemu:///system")
    backend = lv.LibvirtBackend(config, MachineProfile(accel="tcg"))
    backend._net = FakeBridgeNet()  # type: ignore[assignment]  # no real br0 + dhcpd here
    conn: Any = RecordingConnection()
    console = tmp_path / "qemu1.console.log"
    if bridged:
        name, _ = backend._create(conn, "qemu1", "t", console, lv.log, mac="52:54:00:00:00:01")
    else:
        name, port = backend._create(conn, "qemu1", "t", console, lv.log)
        lv._PORTS.release(port)
    assert conn.flags == [libvirt.VIR_DOMAIN_START_AUTODESTROY]
    assert name == backend.domain_name("qemu1")
    assert lh.start_flags(FarmConfig(state_dir=tmp_path).resolved_libvirt_uri) == 0  # embedded


def test_doctor_names_libvirt_default_uri_as_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from farm.doctor import config_sources

    monkeypatch.delenv("FARM_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///system")
    _, rows = config_sources(None)
    row = next(r for r in rows if r["key"] == "libvirt_uri")
    assert row == {
        "key": "libvirt_uri",
        "value": "qemu:///system",
        "source": "env LIBVIRT_DEFAULT_URI",
    }
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI")
    _, rows = config_sources(None)
    row = next(r for r in rows if r["key"] == "libvirt_uri")
    assert row["value"].endswith("(derived)") and row["source"] == "default"
