"""Every config key is checked for type and range at load; the error names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.config import FarmConfig
from farm.errors import ConfigError

BAD = [
    ("heartbeat_timeout = nan", "heartbeat_timeout"),
    ("heartbeat_timeout = inf", "heartbeat_timeout"),
    ("boot_timeout = nan", "boot_timeout"),
    ("boot_timeout = -inf", "boot_timeout"),
    ("heartbeat = nan", "heartbeat"),
    ("idle_linger = nan", "idle_linger"),
    ("rescan_interval = inf", "rescan_interval"),
    ("set_time_limit = nan", "set_time_limit"),
    ("hypervisor_retry_max = nan", "hypervisor_retry_max"),
    ("token = 5", "token"),
    ('token = ""', "token"),
    ('token = "two words"', "token"),
    ('journal = "no"', "journal"),
    ("warm_start = 1", "warm_start"),
    ("bridge_name = 7", "bridge_name"),
    ('bridge_name = "a-name-far-too-long"', "bridge_name"),
    ("state_dir = 5", "state_dir"),
    ('state_dir = ""', "state_dir"),
    ("log_dir = true", "log_dir"),
    ("image_dir = []", "image_dir"),
    ("dhcpd_conf = 3", "dhcpd_conf"),
    ("bridge_subnet = 5", "bridge_subnet"),
    ("backend = 1", "backend"),
    ("network = []", "network"),
    ("max_machines = 1.5", "max_machines"),
    ('boot_retries = "5"', "boot_retries"),
    ("agent_port = 70000", "agent_port"),
    ("log_file = 3", "log_file"),
    ("profile = 3", "profile"),
    ("libvirt_uri = 3", "libvirt_uri"),
]


@pytest.mark.parametrize(("line", "key"), BAD)
def test_bad_value_in_farm_toml_names_the_key(tmp_path: Path, line: str, key: str) -> None:
    toml = tmp_path / "farm.toml"
    toml.write_text(line + "\n")
    with pytest.raises(ConfigError) as info:
        FarmConfig.load(toml)
    assert str(info.value).startswith(key) or f" {key}" in str(info.value), str(info.value)


def test_nan_refused_in_code_too() -> None:
    with pytest.raises(ConfigError, match="heartbeat_timeout"):
        FarmConfig(heartbeat_timeout=float("nan"))


def test_good_values_still_load(tmp_path: Path) -> None:
    toml = tmp_path / "farm.toml"
    toml.write_text(
        'token = "s3cret-token"\njournal = false\nbridge_name = "farmbr0"\n'
        'state_dir = "st"\nheartbeat_timeout = 2.5\nset_time_limit = 10\nidle_linger = 0\n'
    )
    cfg = FarmConfig.load(toml)
    assert cfg.token == "s3cret-token" and cfg.journal is False
    assert cfg.state_dir == Path("st") and cfg.bridge_name == "farmbr0"


def test_defaults_catch_a_running_hang_within_3s() -> None:
    assert FarmConfig().heartbeat_timeout <= 3.0
