"""Networking of the farm: the bridged network (bridge, taps, dhcpd) and address pools."""

from __future__ import annotations

from typing import Any

# -- bridged network (farm.network.bridge / farm.network.dhcp) --------------------------------


def net_up(config: Any) -> Any:
    """Bring up ``br0`` and farm's dhcpd for ``config``; see ``farm.network.bridge.net_up``."""
    from farm.network.bridge import net_up as _net_up

    return _net_up(config)


def net_down(config: Any) -> None:
    """Remove farm's dhcpd, taps and bridge for ``config`` (see ``bridge.net_down``)."""
    from farm.network.bridge import net_down as _net_down

    _net_down(config)
