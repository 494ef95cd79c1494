"""warm_start: validated before anything starts, and read from farm.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.config import FarmConfig
from farm.errors import ConfigError


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"warm_start": 1}, "warm_start must be true or false"),
        ({"warm_start": True}, "warm_start needs backend = 'qemu'"),
    ],
)
def test_bad_warm_start_names_the_key(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FarmConfig(**changes)  # type: ignore[arg-type]


def test_warm_start_from_farm_toml(tmp_path: Path) -> None:
    toml = tmp_path / "farm.toml"
    toml.write_text('backend = "qemu"\nwarm_start = true\n')
    config = FarmConfig.load(toml)
    assert config.warm_start is True and config.backend == "qemu"
    assert FarmConfig().warm_start is False  # cold boots unless asked


def test_warm_start_on_the_bridged_network_is_accepted() -> None:
    """Restored guests take their own MAC and IP (snapshot_net): no longer refused."""
    config = FarmConfig(warm_start=True, backend="qemu", network="bridge")
    assert config.warm_start and config.network == "bridge"
