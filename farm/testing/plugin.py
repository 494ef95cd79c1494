"""farm's pytest plugin (entry point ``pytest11``): fixtures, none autouse.

Loaded in every pytest session of an environment where farm is installed, so
it imports nothing heavy up front: each fixture imports what it needs when a
test asks for it. The fixtures are listed in farm.testing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def farm_toml(tmp_path: Path) -> Path:
    """A farm.toml (local backend, state and logs under tmp_path, short timeouts)."""
    from farm.testing import write_farm_toml

    return write_farm_toml(tmp_path)


@pytest.fixture
def farm_config(farm_toml: Path) -> Any:
    """The FarmConfig of ``farm_toml``."""
    from farm.config import FarmConfig

    return FarmConfig.load(farm_toml)


@pytest.fixture
def farm_recorder() -> Any:
    """A fresh farm.testing.RecordingMonitor."""
    from farm.testing import RecordingMonitor

    return RecordingMonitor()


@pytest.fixture
def farm_fake(farm_config: Any) -> Iterator[Any]:
    """A farm.testing.FakeFarm (in-memory guests with crash/hang injection), closed after."""
    from farm.testing import FakeFarm

    farm = FakeFarm(farm_config)
    try:
        yield farm
    finally:
        farm.close()


@pytest.fixture
def farm_local(farm_config: Any) -> Iterator[Any]:
    """A Distributor on the local backend (agent processes on loopback), closed after."""
    from farm.core.distributor import Distributor

    dist = Distributor(farm_config)
    try:
        yield dist
    finally:
        dist.close()


def _missing(reason: str) -> None:
    """Skip, or fail where CI=true: CI must run what the suite promises."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: scripts/setup installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def farm_postgres() -> Iterator[Any]:
    """A private PostgreSQL server (UNIX socket only) for the session; skipped if not installed."""
    from farm.testing.postgres import PostgresServer, find_bindir

    if find_bindir() is None:
        _missing("PostgreSQL server binaries not installed (Debian: apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg not installed (pip install 'farm[postgres]')")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def farm_postgres_url(farm_postgres: Any) -> str:
    """URL of a new empty database on ``farm_postgres``."""
    return str(farm_postgres.create_database())
