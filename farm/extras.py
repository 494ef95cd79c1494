"""Optional dependencies: import them when needed, or say which extra installs them.

The core install keeps only what every command needs; ``farm report`` needs
matplotlib and numpy (extra ``report``), the bridged network pyroute2 and
isc_dhcp_leases (``bridge``), PostgresMonitor psycopg (``postgres``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from farm.errors import MissingDependency


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise MissingDependency naming ``pip install 'farm[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{what} needs the Python package {module.split('.')[0]!r}, which is not installed: "
            f"pip install 'farm[{extra}]'"
        ) from exc
