"""Tier markers by directory: tests/unit -> unit, tests/process -> process, ..."""

from __future__ import annotations

from pathlib import Path

import pytest

_TIERS = ("unit", "process", "vm", "net")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True, scope="session")
def _fresh_accel_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test session probes KVM itself (no result cached by an earlier run)."""
    import os

    os.environ["FARM_ACCEL_CACHE"] = str(tmp_path_factory.mktemp("accel") / "accel.json")
