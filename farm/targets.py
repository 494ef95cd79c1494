"""Address pools: CIDR ranges of existing targets (taskgen's Distributor, SEER's AddressPool).

``parse_targets`` turns what a user writes (``"172.25.1.0/24"``, ``"10.0.0.7"``,
``"board1:3002"``, ``"[fd00::7]:3001"``) into a de-duplicated list of
``(host, port)``. Rules:

* A CIDR expands to its hosts; for IPv4 prefixes shorter than /31 the network
  and broadcast addresses are left out (a /31 or /32 keeps every address).
  Host bits may be set (``10.0.0.7/24`` means ``10.0.0.0/24``).
* ``ITEM:PORT`` (IPv6: ``[ADDR]:PORT`` or ``[CIDR]:PORT``) sets the port;
  otherwise the default port (the agent port) applies.
* A host name is accepted if it follows RFC 1123 and is not all-numeric
  (``300.1.1.1`` is a bad IPv4 address, not a name); it is resolved when dialled.
* A range of more than ``MAX_HOSTS`` hosts, or a target list longer than
  that in total, is refused: probing it would take hours.

Every bad item raises ``ConfigError`` naming it.

``AddressPool`` keeps named CIDR ranges per node (SEER's ``Set``/``Random``/
``RandomNode``) and picks random addresses without expanding the ranges.
"""

from __future__ import annotations

import ipaddress
import random as _random
import re
from collections.abc import Iterable, Iterator

from farm.agent.protocol import DEFAULT_PORT
from farm.errors import ConfigError
from farm.netaddr import split_host_port

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOSTS = 65536
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def parse_range(text: str) -> IPNetwork:
    """One CIDR range or address (``"10.0.0.0/24"``, ``"10.0.0.7"``) as a network."""
    item = text.strip() if isinstance(text, str) else text
    if not isinstance(item, str) or not item:
        raise ConfigError(f"bad address range {text!r}: expected a CIDR like 10.0.0.0/24")
    try:
        return ipaddress.ip_network(item, strict=False)
    except ValueError as exc:
        raise ConfigError(f"bad address range {item!r}: {_reason(item, exc)}") from exc


def host_count(net: IPNetwork) -> int:
    """Number of usable hosts of ``net`` (IPv4 < /31: without network and broadcast)."""
    if net.version == 4 and net.prefixlen < 31:
        return net.num_addresses - 2
    return net.num_addresses


def nth_host(net: IPNetwork, index: int) -> str:
    """The ``index``-th usable host of ``net`` (0-based), without expanding the range."""
    offset = 1 if net.version == 4 and net.prefixlen < 31 else 0
    return str(net.network_address + offset + index)


def iter_hosts(net: IPNetwork) -> Iterator[str]:
    """Usable hosts of ``net`` in order (lazy)."""
    for i in range(host_count(net)):
        yield nth_host(net, i)


def parse_targets(
    items: str | Iterable[str], default_port: int = DEFAULT_PORT, max_hosts: int = MAX_HOSTS
) -> list[tuple[str, int]]:
    """Expand target strings to a de-duplicated, ordered list of (host, port).

    A single string may hold several items separated by commas or whitespace.
    """
    if isinstance(items, str):
        items = [p for p in re.split(r"[\s,]+", items) if p]
    out: dict[tuple[str, int], None] = {}
    for raw in items:
        if not isinstance(raw, str):
            raise ConfigError(f"bad target {raw!r}: expected a string such as 10.0.0.0/24")
        item = raw.strip()
        if not item:
            raise ConfigError("bad target '': empty string")
        spec, given = split_host_port(item)
        port = default_port if given is None else given
        if _looks_like_address(spec):
            try:
                net = ipaddress.ip_network(spec, strict=False)
            except ValueError as exc:
                raise ConfigError(f"bad target {item!r}: {_reason(spec, exc)}") from exc
            count = host_count(net)
            if count > max_hosts:
                raise ConfigError(
                    f"bad target {item!r}: {count} hosts is too many to probe "
                    f"(at most {max_hosts} per list); use a smaller range"
                )
            if len(out) + count > max_hosts:
                raise ConfigError(
                    f"target list too large at {item!r}: more than {max_hosts} hosts in total"
                )
            for host in iter_hosts(net):
                out[(host, port)] = None
        else:
            _check_hostname(item, spec)
            out[(spec.lower(), port)] = None
            if len(out) > max_hosts:
                raise ConfigError(f"target list too large: more than {max_hosts} hosts in total")
    if not out:
        raise ConfigError("no targets given")
    return list(out)


def _looks_like_address(spec: str) -> bool:
    """True for anything meant as an IP address or CIDR (digits and dots, ':' or '/')."""
    if "/" in spec or ":" in spec:
        return True
    return all(lab.isdigit() for lab in spec.split(".") if lab)


def _check_hostname(item: str, name: str) -> None:
    if len(name) > 253 or not all(_LABEL.match(lab) for lab in name.rstrip(".").split(".")):
        raise ConfigError(
            f"bad target {item!r}: not an IP address, CIDR range or host name "
            "(e.g. 10.0.0.0/24, 10.0.0.7, board1:3001)"
        )


def _reason(spec: str, exc: ValueError) -> str:
    if "/" in spec:
        addr, _, prefix = spec.partition("/")
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            return f"{addr!r} is not an IP address"
        if not prefix.isdigit():
            return f"prefix {prefix!r} is not a number"
        return f"prefix /{prefix} is out of range"
    return f"not a valid IP address ({exc})"


class AddressPool:
    """Named CIDR ranges per node with random picks (SEER's AddressPool)."""

    def __init__(self, nodename: str | None = None, rng: _random.Random | None = None) -> None:
        """``nodename``: this node's own name; random picks never return it."""
        self.nodename = nodename
        self._rng = rng or _random.Random()
        self._nodes: dict[str, list[IPNetwork]] = {}

    def set(self, node: str, ranges: str | Iterable[str]) -> None:
        """Give ``node`` the CIDR ``ranges`` (replacing earlier ones); ConfigError if bad."""
        if isinstance(ranges, str):
            ranges = [ranges]
        nets = [parse_range(r) for r in ranges]
        if not nets:
            raise ConfigError(f"node {node!r}: no address ranges given")
        self._nodes[node] = nets

    def remove(self, node: str) -> None:
        """Forget ``node`` (no error if unknown)."""
        self._nodes.pop(node, None)

    def nodes(self) -> list[str]:
        """Node names in insertion order."""
        return list(self._nodes)

    def ranges(self, node: str) -> list[IPNetwork]:
        """The ranges of ``node`` (KeyError if unknown)."""
        return list(self._nodes[node])

    def _candidates(self) -> list[tuple[str, list[IPNetwork]]]:
        pick = [(n, r) for n, r in self._nodes.items() if n != self.nodename]
        if not pick:
            raise ConfigError("address pool is empty")
        return pick

    def random(self) -> str:
        """A random address of a random range of a random node."""
        _node, nets = self._rng.choice(self._candidates())
        usable = [n for n in nets if host_count(n) > 0]
        net = self._rng.choice(usable)
        return nth_host(net, self._rng.randrange(host_count(net)))

    def random_node(self) -> str:
        """The name of a random node."""
        return self._rng.choice(self._candidates())[0]

    def hosts(self, node: str | None = None) -> Iterator[str]:
        """Every usable host (of ``node``, or of all nodes), lazily, without duplicates."""
        seen: set[str] = set()
        items = [(node, self._nodes[node])] if node is not None else list(self._nodes.items())
        for _n, nets in items:
            for net in nets:
                for host in iter_hosts(net):
                    if host not in seen:
                        seen.add(host)
                        yield host

    def __iter__(self) -> Iterator[str]:
        return self.hosts()

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, address: object) -> bool:
        try:
            addr = ipaddress.ip_address(str(address))
        except ValueError:
            return False
        return any(addr in net for nets in self._nodes.values() for net in nets)

    # SEER spelling
    Set = set
    Random = random
    RandomNode = random_node
