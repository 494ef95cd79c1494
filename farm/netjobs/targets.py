"""Where a NetJobs target is: ``host``, ``host:port``, ``[v6]:port`` or a farm machine name.

A name without a port is first looked up among the machines of the running
farm (its control socket, ``<state_dir>/control.sock``, through
``farm.control.client.ControlClient``); a machine found there is reached at
the address the farm reports. Otherwise the name is a host name or address on
the agent port.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.errors import ConfigError
from farm.netaddr import split_host_port

log = logging.getLogger(__name__)

#: returns the running farm's machines (``[{"name", "state", "address"}, ...]``)
MachineLister = Callable[[], list[dict[str, Any]]]


@dataclass(frozen=True)
class Address:
    """An agent's TCP address, and the target text it came from."""

    host: str
    port: int
    target: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def control_lister(state_dir: Path) -> MachineLister:
    """Lister asking the running farm of ``state_dir`` over its control socket."""

    def machines() -> list[dict[str, Any]]:
        path = Path(state_dir) / "control.sock"
        if not path.exists():
            return []
        try:
            from farm.control.client import ControlClient
        except ImportError as exc:
            raise ConfigError(
                f"a farm is running ({path}) but farm.control.client is not available: {exc}"
            ) from exc
        try:
            status = ControlClient(path).status()
        except Exception as exc:  # a stale socket must not stop address targets
            log.warning("cannot ask the farm at %s for its machines: %s", path, exc)
            return []
        found = status.get("machines", []) if isinstance(status, dict) else []
        return [m for m in found if isinstance(m, dict)]

    return machines


class Resolver:
    """Resolves target texts to agent addresses (machine lookup done once, lazily)."""

    def __init__(
        self,
        default_port: int,
        machines: MachineLister | None = None,
        host_exists: Callable[[str], bool] | None = None,
    ) -> None:
        """``machines`` lists the running farm's machines; ``host_exists`` checks DNS."""
        self.default_port = default_port
        self._lister = machines
        self._machines: list[dict[str, Any]] | None = None
        self._host_exists = host_exists or _resolvable

    def machines(self) -> list[dict[str, Any]]:
        """The running farm's machines (asked once)."""
        if self._machines is None:
            self._machines = self._lister() if self._lister is not None else []
        return self._machines

    def resolve(self, target: str) -> Address:
        """The address of ``target``; ConfigError naming it when it cannot be reached."""
        host, port = split_host_port(target)
        if port is not None or _is_ip(host):
            return Address(host, port or self.default_port, target)
        machine = next((m for m in self.machines() if m.get("name") == host), None)
        if machine is not None:
            address = machine.get("address")
            if not address:
                raise ConfigError(
                    f"target {target!r}: farm machine has no address yet "
                    f"(state {machine.get('state')!r})"
                )
            mhost, mport = split_host_port(str(address))
            return Address(mhost, mport or self.default_port, target)
        if self._host_exists(host):
            return Address(host, self.default_port, target)
        names = sorted(str(m.get("name")) for m in self.machines())
        known = f"machines of the running farm: {', '.join(names)}" if names else "no farm running"
        raise ConfigError(
            f"target {target!r} is neither a farm machine ({known}) nor a resolvable host name"
        )


def _resolvable(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return True
