"""SEER's agent base (seed 002, ``backend.agent``) over farm's traffic workloads.

``Agent`` keeps SEER's hooks: ``TGStart()`` calls ``serverExec()`` on a node
listed in ``servers`` and ``launchTrafficController()`` on one listed in
``clients``; the controller calls ``clientOneLoop(spool, dpool, think, sizes)``
until ``TGStop()``, which calls ``serverStop()`` and ends the controller (a
thread here, not a forked session leader) and the processes in ``pids``.
``clientInit``, ``clientExec``, ``serverExec`` and ``serverStop`` are blank, as
in SEER. ``TrafficAgent`` fills them with farm's traffic server and one
framed message per ``clientExec`` (farm.agent.traffic: same wire, same
statistics as the ``traffic_server``/``traffic_client`` workloads).
"""

from __future__ import annotations

import io
import logging
import os
import random
import signal
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from farm import targets
from farm.agent.traffic.config import server_config
from farm.agent.traffic.server import run_server
from farm.agent.traffic.wire import Buffer, exchange
from farm.errors import ConfigError

log = logging.getLogger(__name__)


class AddressPool(targets.AddressPool):
    """SEER's AddressPool: ``AddressPool(nodename=None, fakelist=None)``, ``Set``, ``random()``.

    ``fakelist``: ``{node: [CIDR, ...]}`` or ``[(node, [CIDR, ...]), ...]`` to fill it at once.
    """

    def __init__(
        self,
        nodename: str | None = None,
        fakelist: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(nodename, rng)
        items = fakelist.items() if isinstance(fakelist, Mapping) else (fakelist or ())
        for node, ranges in items:
            self.Set(node, ranges)


class Agent:
    """SEER's agent base: receives variables, starts/stops traffic generation."""

    def __init__(self, nodename: str | None = None) -> None:
        self.nodename = nodename or socket.gethostname()
        self.clients: list[str] = []
        self.servers: list[str] = []
        self.think: float = 1.0
        self.sizes: list[int] = [1000]
        self.pids: list[int] = []
        self.nodetable: dict[str, dict[str, Any]] = {}  # key -> {node: value}
        self._stop = threading.Event()
        self._controller: threading.Thread | None = None

    # -- variables ----------------------------------------------------------------------------
    def processArgs(self, args: Mapping[str, Any]) -> None:
        """Take every variable of ``args``, checked and converted (ConfigError naming it)."""
        for key, value in args.items():
            if key in ("clients", "servers"):
                value = [value] if isinstance(value, str) else [str(v) for v in value]
            elif key == "think":
                value = _number(key, value)
            elif key == "sizes":
                values = [value] if isinstance(value, int | float | str) else list(value)
                value = [int(_number(key, v)) for v in values]
                if not value:
                    raise ConfigError("sizes: give at least one size")
            elif key.startswith("_"):
                raise ConfigError(f"{key}: not a variable")
            setattr(self, key, value)
        self.configDone()

    def configDone(self) -> None:
        """Called after processArgs (blank)."""

    def getNodeTable(self, key: str) -> dict[str, Any]:
        """The values of ``key`` for every node."""
        return dict(self.nodetable.get(key, {}))

    def getNodeVar(self, key: str, node: str | None = None) -> Any:
        """``key``'s value for ``node`` (default: this node)."""
        return self.nodetable.get(key, {}).get(node or self.nodename)

    # -- traffic generation -------------------------------------------------------------------
    def TGStart(self) -> None:
        """Start serving on a server node and the client loop on a client node."""
        self._stop.clear()
        if self.nodename in self.servers:
            self.serverExec()
        if self.nodename in self.clients:
            self.launchTrafficController()

    def TGStop(self) -> None:
        """Stop: serverStop(), end the client loop, kill the processes in ``pids``."""
        self._stop.set()
        if self.nodename in self.servers:
            self.serverStop()
        if self._controller is not None:
            self._controller.join(10.0)
            self._controller = None
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        self.pids = []

    def launchTrafficController(self) -> None:
        """Run ``clientInit()`` then ``clientOneLoop`` repeatedly on a thread until TGStop()."""
        spool = self.sourcePool()
        dpool = self.destinationPool()

        def loop() -> None:
            self.clientInit()
            while not self._stop.is_set():
                self.clientOneLoop(spool, dpool, self.think, self.sizes)

        self._controller = threading.Thread(target=loop, name="seer-traffic", daemon=True)
        self._controller.start()

    def sourcePool(self) -> AddressPool:
        """Addresses this node sends from (farm addition: ``addresses`` node table)."""
        return _pool(None, {self.nodename: self.getNodeVar("addresses") or "127.0.0.1/32"})

    def destinationPool(self) -> AddressPool:
        """Addresses of the server nodes (``addresses`` node table; loopback if not given)."""
        table = self.getNodeTable("addresses")
        return _pool(self.nodename, {s: table.get(s, "127.0.0.1/32") for s in self.servers})

    def clientOneLoop(
        self, spool: AddressPool, dpool: AddressPool, think: float, sizes: list[int]
    ) -> None:
        """One client step: random source and destination, ``clientExec``, then ``think`` s."""
        src = spool.random()
        dst = dpool.random()
        self.clientExec(src, dst, random.choice(sizes))
        self._stop.wait(think)

    def clientInit(self) -> None:
        """Blank."""

    def clientExec(self, src: str, dst: str, size: int) -> None:
        """Blank."""

    def serverExec(self) -> None:
        """Blank."""

    def serverStop(self) -> None:
        """Blank."""


class TrafficAgent(Agent):
    """An Agent whose hooks use farm's traffic server and wire (echo mode, ``port``)."""

    def __init__(self, nodename: str | None = None, port: int = 5001) -> None:
        super().__init__(nodename)
        self.port = port
        self.sent = 0  # payload bytes of the messages answered
        self.errors = 0
        self.server_stats: dict[str, Any] | None = None
        self._server_stop = threading.Event()
        self._server: threading.Thread | None = None
        self._buf = Buffer()
        self._seq = 0

    def serverExec(self) -> None:
        cfg = server_config({"port": self.port, "mode": "echo", "host": "0.0.0.0"})
        self._server_stop.clear()

        def serve() -> None:
            self.server_stats = run_server(cfg, self._server_stop, io.StringIO())

        self._server = threading.Thread(target=serve, name="seer-server", daemon=True)
        self._server.start()

    def serverStop(self) -> None:
        self._server_stop.set()
        if self._server is not None:
            self._server.join(10.0)
            self._server = None

    def clientExec(self, src: str, dst: str, size: int) -> None:
        """Send one ``size``-byte message from ``src`` to ``dst``:``port`` and wait for it back."""
        self._seq += 1
        try:
            with socket.create_connection(
                (dst, self.port), timeout=5.0, source_address=(src, 0)
            ) as sock:
                sock.settimeout(5.0)
                self.sent += exchange(sock, self._seq, size, self._buf)
        except OSError as exc:
            self.errors += 1
            log.debug("seer client %s -> %s: %s", src, dst, exc)


def _pool(nodename: str | None, table: Mapping[str, Any]) -> AddressPool:
    return AddressPool(nodename, {node: ranges for node, ranges in table.items()})


def _number(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{key}: must be >= 0, got {value!r}")
    return number
