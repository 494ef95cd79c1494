"""``hypervisors`` in farm.toml: validation with errors naming the key, defaults, helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.backend.libvirt_storage import pool_xml, volume_name, volume_xml
from farm.config import FarmConfig, HypervisorConfig
from farm.errors import ConfigError


def test_toml_tables_become_validated_hosts(tmp_path: Path) -> None:
    toml = tmp_path / "farm.toml"
    toml.write_text(
        'network = "bridge"\nbridge_subnet = "10.200.40.0/21"\nmax_machines = 4\n'
        '[[hypervisors]]\nuri = "qemu:///system"\nmax_machines = 2\nnetwork = "user"\n'
        '[[hypervisors]]\nuri = "qemu+ssh://farm@rack1/system"\nbridge_name = "br1"\n'
        'bridge_subnet = "10.201.0.0/21"\nimage_dir = "/var/lib/farm/images"\n'
    )
    cfg = FarmConfig.load(toml, state_dir=tmp_path)
    first, second = cfg.hypervisors
    assert first == HypervisorConfig(
        uri="qemu:///system", name="host0", max_machines=2, network="user",
        bridge_name="br0", bridge_subnet="10.200.40.0/21",
    )  # fmt: skip
    assert second.name == "rack1" and second.network == "bridge"  # inherits top-level network
    assert second.max_machines == cfg.machine_cap  # no per-host cap: the machine cap
    assert second.uploads and not first.uploads
    assert cfg.hypervisor_retry_max == 60.0


def test_no_hypervisors_means_the_single_backend(tmp_path: Path) -> None:
    assert FarmConfig(state_dir=tmp_path).hypervisors == ()


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ({"uri": "qemu:///system"}, "hypervisors must be a list of tables"),
        (["qemu:///system"], r"hypervisors\[0\] must be a table"),
        ([{"max_machines": 2}], r"hypervisors\[0\]\.uri is missing"),
        ([{"uri": "qemu:///system"}, {"uri": "xen:///"}], r"hypervisors\[1\]\.uri: "),
        ([{"uri": "qemu:///system", "max_machines": 0}], r"hypervisors\[0\]\.max_machines"),
        ([{"uri": "qemu:///system", "network": "tap"}], r"hypervisors\[0\]\.network"),
        ([{"uri": "qemu:///system", "bridge_subnet": "10.0.0.0/30"}], r"\.bridge_subnet"),
        ([{"uri": "qemu:///system", "bridge_name": "a bridge"}], r"\.bridge_name"),
        ([{"uri": "qemu:///system", "image_dir": "images"}], r"\.image_dir must be an absolute"),
        ([{"uri": "qemu:///system", "name": "x y"}], r"hypervisors\[0\]\.name"),
        ([{"uri": "qemu:///system", "port": 1}], r"hypervisors\[0\]: unknown key\(s\) port"),
        (
            [{"uri": "qemu+ssh://a/system"}, {"uri": "qemu+tcp://a/system"}],
            r"hypervisors\[1\]\.name 'a' is used twice",
        ),
    ],
)
def test_bad_hypervisors_name_the_key(tmp_path: Path, hosts: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FarmConfig(state_dir=tmp_path, hypervisors=hosts)  # type: ignore[arg-type]


def test_hypervisors_need_the_libvirt_backend(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hypervisors need backend = 'libvirt'"):
        FarmConfig(state_dir=tmp_path, backend="qemu", hypervisors=[{"uri": "qemu:///system"}])
    with pytest.raises(ConfigError, match="hypervisor_retry_max"):
        FarmConfig(state_dir=tmp_path, hypervisor_retry_max=0)


def test_volume_names_carry_the_digest() -> None:
    assert volume_name(Path("/x/image.elf"), "ab" * 32) == "image-abababababababab.elf"
    assert "<path>/srv/img</path>" in pool_xml("/srv/img")
    assert '<capacity unit="bytes">123</capacity>' in volume_xml("v", 123)
