"""libvirt backend logic with fakes: URIs, qemu.conf, ownership rules, destroy, reap."""

from __future__ import annotations

import itertools
import os
import socket
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import libvirt
import psutil
import pytest

from farm.backend import identity
from farm.backend import libvirt as lv
from farm.backend import libvirt_host as lh
from farm.backend import libvirt_xml as lx
from farm.backend.libvirt_xml import FARM_NS, FarmMarker
from farm.config import FarmConfig
from farm.errors import BackendError, ConfigError
from farm.procs import ProcessRegistry
from farm.profile import MachineProfile


def test_embed_root_from_uri(tmp_path: Path) -> None:
    uri = FarmConfig(state_dir=tmp_path).resolved_libvirt_uri
    assert lx.embed_root(uri) == (tmp_path / "libvirt").resolve()
    assert lx.embed_root("qemu:///system") is None
    assert lx.embed_root("qemu+ssh://host/system") is None
    with pytest.raises(ConfigError, match="root="):
        lx.embed_root("qemu:///embed")
    with pytest.raises(ConfigError, match="absolute"):
        lx.embed_root("qemu:///embed?root=relative/dir")


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("qemu:///system", True),
        ("qemu:///embed?root=/x", True),
        ("qemu+unix:///system?socket=/run/x/libvirt-sock", True),
        ("qemu+ssh://host/system", False),
        ("qemu+tcp://localhost/system", False),
        ("qemu://host/system", False),
    ],
)
def test_is_local(uri: str, local: bool) -> None:
    assert lx.is_local(uri) is local
    assert (lx.remote_host(uri) is None) is local


def test_remote_ports_are_not_probed_locally() -> None:
    ports = lv._Ports()
    port = ports.allocate(local=False)
    assert 20000 <= port <= 60999
    ports.release(port)


def test_qemu_conf_written_and_kept_when_user_managed(tmp_path: Path) -> None:
    path = lx.write_qemu_conf(tmp_path)
    assert path == tmp_path / "etc" / "qemu.conf"
    text = path.read_text()
    for line in ('stdio_handler = "file"', 'security_driver = "none"', "dynamic_ownership = 0"):
        assert line in text
    assert ('user = "root"' in text) is (os.geteuid() == 0)
    lx.write_qemu_conf(tmp_path)  # ours: rewritten, same content
    assert path.read_text() == text
    path.write_text('security_driver = "none"\n# mine\n')
    lx.write_qemu_conf(tmp_path)
    assert path.read_text() == 'security_driver = "none"\n# mine\n'


def test_missing_libvirt_qemu_user_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_user(name: str) -> Any:
        raise KeyError(name)

    monkeypatch.setattr(lx.os, "geteuid", lambda: 0)
    monkeypatch.setattr(lx.pwd, "getpwnam", no_user)
    with pytest.raises(BackendError, match="libvirt-qemu"):
        lx.check_embed_users()


def test_ports_are_distinct_until_released() -> None:
    ports = lv._Ports()
    a, b = ports.allocate(), ports.allocate()
    assert a != b and 1024 <= a <= 65535
    ports.release(a)
    ports.release(a)  # harmless twice


def test_owner_alive_rules() -> None:
    me = psutil.Process()
    host = socket.gethostname()
    assert lh.owner_alive(FarmMarker(me.pid, me.create_time(), host, "/s"))
    assert not lh.owner_alive(FarmMarker(me.pid, me.create_time() - 1000, host, "/s"))  # recycled
    assert not lh.owner_alive(FarmMarker(2**22 + 12345, 1.0, host, "/s"))  # gone
    assert lh.owner_alive(FarmMarker(2**22 + 12345, 1.0, "other-host", "/s"))  # not ours to judge


def libvirt_error(code: int) -> libvirt.libvirtError:
    exc = libvirt.libvirtError("fake")
    exc.err = (code, 0, "fake", 2, None, None, None, 0, 0)
    return exc


class FakeDomain:
    """Just enough of virDomain for the backend's bookkeeping."""

    def __init__(self, name: str, marker_owner: int | None, host: str | None = None) -> None:
        self._name = name
        self.active = True
        self.destroy_calls = 0
        meta = ""
        if marker_owner is not None:
            meta = (
                f"<metadata><farm:guest xmlns:farm='{FARM_NS}' owner-pid='{marker_owner}'"
                f" owner-start='0' owner-host='{host or socket.gethostname()}' state-dir='/s'/>"
                "</metadata>"
            )
        self.xml = f"<domain type='qemu'><name>{name}</name>{meta}</domain>"

    def name(self) -> str:
        return self._name

    def XMLDesc(self, flags: int = 0) -> str:
        return self.xml

    def UUIDString(self) -> str:
        return f"uuid-{self._name}"

    def isActive(self) -> int:
        if not self.active:
            raise libvirt_error(libvirt.VIR_ERR_NO_DOMAIN)
        return 1

    def destroy(self) -> int:
        self.destroy_calls += 1
        if not self.active:
            raise libvirt_error(libvirt.VIR_ERR_NO_DOMAIN)
        self.active = False
        return 0


class FakeConnection:
    def __init__(self, domains: list[FakeDomain]) -> None:
        self.domains = domains

    def listAllDomains(self, flags: int = 0) -> list[FakeDomain]:
        return [d for d in self.domains if d.active]

    def lookupByName(self, name: str) -> FakeDomain:
        for dom in self.listAllDomains():
            if dom.name() == name:
                return dom
        raise libvirt_error(libvirt.VIR_ERR_NO_DOMAIN)

    def close(self) -> int:
        return 0


def fake_backend(tmp_path: Path, domains: list[FakeDomain]) -> lv.LibvirtBackend:
    profile: Any = SimpleNamespace(kernel=None, initrd=None, qemu="qemu-system-x86_64")
    backend = lv.LibvirtBackend(FarmConfig(state_dir=tmp_path, warm_start=False), profile=profile)
    backend._conn = FakeConnection(domains)  # type: ignore[assignment]
    return backend


def test_reap_stale_never_touches_foreign_or_live_owners(tmp_path: Path) -> None:
    dead = FakeDomain("qemu1", marker_owner=2**22 + 12345)
    foreign = FakeDomain("webserver", marker_owner=None)
    mine = FakeDomain("qemu2", marker_owner=os.getpid())
    live_other = FakeDomain("qemu3", marker_owner=1)  # pid 1 lives (start time not recorded)
    remote = FakeDomain("qemu4", marker_owner=2**22 + 12345, host="elsewhere")
    backend = fake_backend(tmp_path, [dead, foreign, mine, live_other, remote])
    assert backend.reap_stale() == ["qemu1"]
    assert not dead.active
    assert foreign.active and mine.active and live_other.active and remote.active
    backend.close()


def test_name_clash_with_foreign_domain_refused(tmp_path: Path) -> None:
    foreign = FakeDomain(fake_backend(tmp_path, []).domain_name("qemu1"), marker_owner=None)
    backend = fake_backend(tmp_path, [foreign])
    with pytest.raises(BackendError, match="not farm's"):
        backend._clear_name(backend.connection(), "qemu1", lv.log)
    assert foreign.active
    stale = FakeDomain(backend.domain_name("qemu2"), marker_owner=2**22 + 12345)
    backend._conn = FakeConnection([stale])  # type: ignore[assignment]
    backend._clear_name(backend.connection(), "qemu2", lv.log)
    assert not stale.active
    busy = FakeDomain(backend.domain_name("qemu3"), marker_owner=1)
    backend._conn = FakeConnection([busy])  # type: ignore[assignment]
    with pytest.raises(BackendError, match="another running farm"):
        backend._clear_name(backend.connection(), "qemu3", lv.log)


def test_guest_destroy_is_idempotent_and_forgets_only_its_records(tmp_path: Path) -> None:
    registry = ProcessRegistry(tmp_path)
    me = psutil.Process()
    registry.record("qemu1", me.pid, "libvirt-qemu")
    dom = FakeDomain("qemu1", marker_owner=os.getpid())
    guest = lv.LibvirtGuest("qemu1", dom, ("127.0.0.1", 40000), registry)  # type: ignore[arg-type]
    assert guest.alive() and guest.address(0) == ("127.0.0.1", 40000)
    guest.destroy()
    guest.destroy()
    assert dom.destroy_calls == 1
    assert not guest.alive()
    assert "qemu1" in registry.entries()  # records a pid that is not this guest's: kept
    registry.forget("qemu1")


def test_guest_on_vanished_domain_reads_dead(tmp_path: Path) -> None:
    dom = FakeDomain("qemu1", marker_owner=os.getpid())
    guest = lv.LibvirtGuest("qemu1", dom, ("h", 1), ProcessRegistry(tmp_path))  # type: ignore[arg-type]
    dom.active = False  # guest powered off: transient domain gone
    assert not guest.alive()
    guest.destroy()  # gone already: fine


def test_has_uuid() -> None:
    proc: Any = SimpleNamespace(cmdline=lambda: ["qemu-system-x86_64", "-uuid", "abc", "-m", "1"])
    assert lv._has_uuid(proc, "abc")
    assert not lv._has_uuid(proc, "m")


def test_too_long_embedded_root_is_explained() -> None:
    deep = FarmConfig(state_dir=Path("/" + "d" * 80)).resolved_libvirt_uri
    assert "shorter state_dir" in lx.embed_socket_hint(deep, "qemu1")
    assert lx.embed_socket_hint("qemu:///embed?root=/tmp/f", "qemu1") == ""
    assert lx.embed_socket_hint("qemu:///system", "qemu1") == ""


CAPS = """<capabilities><host/>
  <guest><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest>
  <guest><arch name='armv7l'><domain type='qemu'/></arch></guest>
</capabilities>"""


def test_offers_kvm_from_capabilities() -> None:
    assert lx.offers_kvm(CAPS, "x86_64")
    assert not lx.offers_kvm(CAPS, "armv7l")
    assert not lx.offers_kvm("garbage", "x86_64")


def test_remote_auto_accel_follows_the_hosts_capabilities(tmp_path: Path) -> None:
    config = FarmConfig(state_dir=tmp_path, libvirt_uri="qemu+ssh://hv1/system")
    backend = lv.LibvirtBackend(config, MachineProfile(accel="auto"))
    backend._conn = SimpleNamespace(getCapabilities=lambda: CAPS)  # type: ignore[assignment]
    assert backend.domain_type() == "kvm"
    arm = MachineProfile(accel="auto", qemu="qemu-system-arm", cpu="", nic="lan9118")
    backend = lv.LibvirtBackend(config, arm)
    backend._conn = SimpleNamespace(getCapabilities=lambda: CAPS)  # type: ignore[assignment]
    assert backend.domain_type() == "qemu"


def spec_of(profile: MachineProfile, tmp_path: Path, **config: Any) -> lx.DomainSpec:
    backend = lv.LibvirtBackend(FarmConfig(state_dir=tmp_path, **config), profile)
    return backend._spec("qemu1", "tok", tmp_path / "qemu1.console.log", 40000)


def test_domain_boots_like_plain_qemu(tmp_path: Path) -> None:
    """Same kernel, initrd, command line, memory, CPU and NIC as the qemu backend's cold boot."""
    profile = MachineProfile(accel="tcg", memory=300, smp=2)
    spec = spec_of(profile, tmp_path, agent_port=3005)
    argv = identity.cold_profile(profile).qemu_argv(
        "qemu1", hostfwd_port=40000, token=None, guest_port=3005
    )
    opt = {a: b for a, b in itertools.pairwise(argv) if a.startswith("-")}
    assert spec.cmdline == opt["-append"]
    # the key comes over the virtio port farm.identity, never on the command line
    assert "console=ttyS0" in spec.cmdline and "farm.identity=boot" in spec.cmdline
    assert "tok" not in spec.cmdline and spec.identity_socket is not None
    channel = ET.fromstring(lx.domain_xml(spec)).find("devices/channel/target")
    assert channel is not None and channel.get("name") == "farm.identity"
    assert "farm.port=3005" in spec.cmdline
    assert spec.kernel == Path(opt["-kernel"]).resolve()
    assert spec.initrd == Path(opt["-initrd"]).resolve()
    board = argv[argv.index("-machine") + 1].split(",")[0]  # libvirt: acpi=off is <features>
    assert (spec.memory_mib, spec.smp, spec.machine) == (300, 2, board)
    assert spec.domain_type == "qemu" and opt["-accel"] == "tcg"
    root = ET.fromstring(lx.domain_xml(spec))
    args = [a.get("value", "") for a in root.iter(f"{{{lx.QEMU_NS}}}arg")]
    assert args[args.index("-cpu") + 1] == opt["-cpu"]
    assert "hostfwd=tcp:127.0.0.1:40000-:3005" in args[1]
    assert args[3] == "virtio-net-device,netdev=farmnet"  # microvm: virtio-mmio, no PCI address
    assert root.find("features/acpi") is None  # farm's kernel finds them on its command line
    ctl = root.find("devices/controller[@type='virtio-serial']/address")
    assert ctl is not None and ctl.get("type") == "virtio-mmio"
    assert spec.owner_pid == os.getpid()
    q35 = lx.domain_xml(spec_of(replace(profile, machine="q35"), tmp_path))
    assert "virtio-net-pci,netdev=farmnet,addr=0x10" in q35 and "virtio-mmio" not in q35
    assert ET.fromstring(q35).find("features/acpi") is not None


def test_profile_without_nic_or_serial(tmp_path: Path) -> None:
    profile = MachineProfile(accel="tcg", nic="", serial=False)
    root = ET.fromstring(lx.domain_xml(spec_of(profile, tmp_path)))
    args = [a.get("value", "") for a in root.iter(f"{{{lx.QEMU_NS}}}arg")]
    assert "-netdev" not in args and "-nic" not in args
    assert root.find("devices/serial") is None and root.find("devices/console") is None


class StuckDomain(FakeDomain):
    """A domain libvirt fails to destroy (not merely gone)."""

    def destroy(self) -> int:
        self.destroy_calls += 1
        raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR)


def test_destroy_failure_is_reported_and_reap_goes_on(tmp_path: Path) -> None:
    stuck = StuckDomain("qemu1", marker_owner=2**22 + 12345)
    dead = FakeDomain("qemu2", marker_owner=2**22 + 12345)
    backend = fake_backend(tmp_path, [stuck, dead])
    assert backend.reap_stale() == ["qemu2"]
    guest = lv.LibvirtGuest("qemu1", stuck, ("h", 1), ProcessRegistry(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="cannot destroy domain qemu1"):
        guest.destroy()
    guest.destroy()  # idempotent even after a failure
    assert stuck.destroy_calls == 2
