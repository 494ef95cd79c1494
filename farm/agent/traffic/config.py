"""Traffic configs (task config = command-line flags): validation, destinations, draws."""

from __future__ import annotations

import ipaddress
import math
import random

from farm.agent.traffic import MODES, ROLES, TrafficConfigError
from farm.agent.traffic.dist import number, parse_distribution
from farm.agent.traffic.wire import MAX_SIZE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def parse_servers(value: object, default_port: int | None) -> list[tuple[str, int]]:
    """``"h:p,h2"`` or a list of such items -> [(host, port)]; a bare host takes ``port``."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise TrafficConfigError(f"servers must be 'host:port,...' or a list, got {value!r}")
    out = []
    for raw in (i.strip() for i in items):
        if not raw:
            continue
        host, colon, port = raw.rpartition(":") if "]" not in raw else raw[1:].partition("]:")
        if not colon:
            host, port = raw, ""
        host = host.strip("[]")
        number = _port(port, f"servers item {raw!r}") if port else default_port
        if not host or number is None:
            raise TrafficConfigError(f"servers item {raw!r} needs host:port (or give port)")
        out.append((host, number))
    if not out:
        raise TrafficConfigError("servers is empty")
    return out


def parse_cidrs(value: object) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``"10.0.0.0/24,10.0.1.0/24"`` or a list -> networks (host bits may be set)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise TrafficConfigError(f"cidr must be 'A/N,...' or a list, got {value!r}")
    nets = []
    for raw in (i.strip() for i in items if i.strip()):
        try:
            nets.append(ipaddress.ip_network(raw, strict=False))
        except ValueError as exc:
            raise TrafficConfigError(f"cidr item {raw!r}: {exc}") from None
    if not nets:
        raise TrafficConfigError("cidr is empty")
    return nets


class AddressPicker:
    """Random hosts of CIDR ranges (SEER's AddressPool.Random): a random range, then a host."""

    def __init__(self, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.nets = nets

    def pick(self, rng: random.Random) -> str:
        """One host address; IPv4 ranges above /31 leave out network and broadcast."""
        net = self.nets[rng.randrange(len(self.nets))]
        skip = 1 if net.version == 4 and net.prefixlen < 31 else 0
        return str(net.network_address + skip + rng.randrange(net.num_addresses - 2 * skip))


def _port(value: object, what: str) -> int:
    try:
        port = int(str(value))
    except ValueError:
        raise TrafficConfigError(f"{what}: port {value!r} is not an integer") from None
    if not 0 <= port <= 65535:
        raise TrafficConfigError(f"{what}: port {port} is outside 0..65535")
    return port


def _seconds(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    value = default if value is None else value
    if isinstance(value, str):
        value = number(value, f"config.{key}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrafficConfigError(f"config.{key} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= 10**9:
        raise TrafficConfigError(f"config.{key}={value!r} must be in 0..1e9 seconds")
    return float(value)


def _check_keys(raw: object, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise TrafficConfigError("config must be an object")
    unknown = sorted(set(raw) - set(allowed) - {"arg1"})
    if unknown:
        raise TrafficConfigError(f"config.{unknown[0]} is not a key; known: {', '.join(allowed)}")
    return raw


SERVER_KEYS = ("port", "host", "mode", "duration", "stats_interval")
CLIENT_KEYS = (
    "servers", "cidr", "port", "size", "think", "duration", "count", "seed",
    "stats_interval", "connect_timeout", "timeout",
)  # fmt: skip


def server_config(raw: object) -> dict[str, Any]:
    """Validated server config with defaults filled (see docs/traffic.md)."""
    cfg = _check_keys(raw, SERVER_KEYS)
    if cfg.get("port") is None:
        raise TrafficConfigError("config.port is required (0 picks a free port)")
    mode = cfg.get("mode", "echo")
    if mode not in MODES:
        raise TrafficConfigError(f"config.mode must be one of {', '.join(MODES)}, got {mode!r}")
    host = cfg.get("host", "0.0.0.0")
    if not isinstance(host, str) or not host:
        raise TrafficConfigError(f"config.host must be an address, got {host!r}")
    return {
        "port": _port(cfg["port"], "config.port"),
        "host": host,
        "mode": mode,
        "duration": _seconds(cfg, "duration", 0.0),
        "stats_interval": _seconds(cfg, "stats_interval", 1.0),
    }


def client_config(raw: object) -> dict[str, Any]:
    """Validated client config with defaults filled (see docs/traffic.md)."""
    cfg = _check_keys(raw, CLIENT_KEYS)
    port = None if cfg.get("port") is None else _port(cfg["port"], "config.port")
    servers, cidr = cfg.get("servers"), cfg.get("cidr")
    if (servers is None) == (cidr is None):
        raise TrafficConfigError("config needs exactly one of servers or cidr")
    if cidr is not None and port is None:
        raise TrafficConfigError("config.port is required with cidr")
    count, seed = cfg.get("count", 0), cfg.get("seed")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise TrafficConfigError(f"config.count must be an int >= 0, got {count!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TrafficConfigError(f"config.seed must be an int, got {seed!r}")
    size = parse_distribution(cfg.get("size", 1000), "config.size")
    top = size.b if size.kind in ("uniform", "pareto") else size.a  # max, scale, value or mean
    if top > MAX_SIZE:
        raise TrafficConfigError(f"config.size: {size} goes beyond {MAX_SIZE} bytes")
    return {
        "servers": None if servers is None else parse_servers(servers, port),
        "cidr": None if cidr is None else parse_cidrs(cidr),
        "port": port,
        "size": size,
        "think": parse_distribution(cfg.get("think", 0.01), "config.think"),
        "duration": _seconds(cfg, "duration", 5.0),
        "count": count,
        "seed": seed,
        "stats_interval": _seconds(cfg, "stats_interval", 1.0),
        "connect_timeout": _seconds(cfg, "connect_timeout", 2.0) or 2.0,
        "timeout": _seconds(cfg, "timeout", 5.0) or 5.0,
    }


def check_config(pkg: str, config: object) -> str | None:
    """Why ``config`` is unusable for traffic ``pkg`` (naming the key), or None if fine."""
    if pkg not in ROLES:
        return f"unknown traffic pkg {pkg!r}"
    try:
        (server_config if ROLES[pkg] == "server" else client_config)(config)
    except TrafficConfigError as exc:
        return str(exc)
    return None


def config_argv(pkg: str, config: dict[str, Any]) -> list[str]:
    """Command line of :func:`main` for a task's config: role, then ``--key value`` flags."""
    out = [ROLES[pkg]]
    for key, value in config.items():
        if key == "arg1" or value is None:
            continue
        text = ",".join(value) if isinstance(value, list) else str(value)
        out.append(f"--{key.replace('_', '-')}={text}")  # one item: values may start with '-'
    return out


def draws(cfg: dict[str, Any]) -> Iterator[tuple[tuple[str, int], int, float]]:
    """(destination, size, think) per message attempt; a replay with the same seed is equal."""
    rng = random.Random(cfg["seed"])
    servers, cidr, port = cfg["servers"], cfg["cidr"], cfg["port"]
    picker = AddressPicker(cidr) if cidr is not None else None
    while True:
        if picker is not None:
            dest = (picker.pick(rng), port)
        else:
            dest = servers[rng.randrange(len(servers))]
        size = min(MAX_SIZE, max(0, round(cfg["size"].sample(rng))))
        yield dest, size, max(0.0, cfg["think"].sample(rng))
