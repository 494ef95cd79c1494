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


# -- robustness suite size: small in CI, full with --full or FARM_FULL=1 ----------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="run the robustness suite (chaos, fuzz, soak, resume) at full size",
    )


def pytest_configure(config: pytest.Config) -> None:
    """``--full`` also sets FARM_FULL=1, so module-level sizes (hypothesis settings) see it.

    Also registers farm.testing's plugin when the installed metadata predates its
    ``pytest11`` entry point (an editable install made before it existed).
    """
    import os

    from farm.testing import plugin

    if not config.pluginmanager.is_registered(plugin):
        config.pluginmanager.register(plugin, "farm")

    if config.getoption("--full", default=False):
        os.environ["FARM_FULL"] = "1"


@pytest.fixture(scope="session")
def full_size(request: pytest.FixtureRequest) -> bool:
    """True when the robustness suite runs at full size (``--full`` or ``FARM_FULL=1``)."""
    import os

    return bool(request.config.getoption("--full")) or os.environ.get("FARM_FULL", "") not in (
        "",
        "0",
    )
