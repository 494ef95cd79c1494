"""VM backends behind one small interface (see ``base``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from farm.backend.base import Backend, Guest
from farm.errors import ConfigError

if TYPE_CHECKING:
    from farm.config import FarmConfig

__all__ = ["Backend", "Guest", "create"]


def create(config: FarmConfig) -> Backend:
    """Instantiate the backend named in ``config.backend`` (imported lazily)."""
    if config.backend == "local":
        from farm.backend.local import LocalBackend

        return LocalBackend(config)
    if config.backend == "qemu":
        from farm.backend.qemu import QemuBackend

        return QemuBackend(config)
    if config.backend == "libvirt":
        from farm.backend.libvirt import LibvirtBackend

        return LibvirtBackend(config)
    raise ConfigError(f"unknown backend {config.backend!r}")
