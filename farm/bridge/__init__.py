"""The bridged network of spawned guests: bridge, one tap per machine, farm's dhcpd.

CIDR ranges of existing targets are parsed in :mod:`farm.targets`.
"""

from __future__ import annotations

from typing import Any

# -- bridged network (farm.bridge.bridge / farm.bridge.dhcp) ----------------------------------


def net_up(config: Any) -> Any:
    """Bring up ``br0`` and farm's dhcpd for ``config``; see ``farm.bridge.bridge.net_up``."""
    from farm.bridge.bridge import net_up as _net_up

    return _net_up(config)


def net_down(config: Any) -> None:
    """Remove farm's dhcpd, taps and bridge for ``config`` (see ``bridge.net_down``)."""
    from farm.bridge.bridge import net_down as _net_down

    _net_down(config)
