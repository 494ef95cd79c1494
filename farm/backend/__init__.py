"""VM backends behind one small interface (see ``base``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from farm.backend.base import Backend, Guest
from farm.errors import ConfigError

if TYPE_CHECKING:
    from farm.config import FarmConfig

__all__ = ["Backend", "Guest", "create"]


def create(
    config: FarmConfig,
    targets: str | Iterable[str] | None = None,
    session_class: type | None = None,
    **options: Any,
) -> Backend:
    """Instantiate the backend named in ``config.backend`` (imported lazily).

    With ``targets`` (CIDR ranges / addresses of existing hosts) it is the
    ``hosts`` backend whatever ``config.backend`` says; ``options`` go to it.
    With ``config.hypervisors`` it is the ``multihost`` backend (one libvirt
    connection per hypervisor host, see ``farm.backend.multihost``).
    """
    if targets is not None:
        from farm.backend.hosts import ExistingHostsBackend

        return ExistingHostsBackend(config, targets, session_class, **options)
    if config.hypervisors:
        from farm.backend.multihost import HypervisorsBackend

        return HypervisorsBackend(config, **options)
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
