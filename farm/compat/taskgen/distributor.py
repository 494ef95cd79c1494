"""taskgen's Distributor (``taskgen.distributor``) over farm's.

``Distributor(destinations, port=3001, session_class=None, starter_threads=20)``
runs on existing targets (CIDR ranges, addresses) as taskgen did; ``start``,
``stop``, ``close``, ``wait_*`` and ``event_handler``/``monitor`` keep their
meaning. Extra keywords (``config=``, ``backend=``, farm config keys) go to
farm's Distributor; with ``backend=`` the destinations are not used.
"""

from __future__ import annotations

import logging
from typing import Any

from farm.compat.convert import CompatMonitor, CompatSource, unique_name
from farm.core.distributor import Distributor as FarmDistributor
from farm.errors import ConfigError

log = logging.getLogger(__name__)


class Distributor:
    """Distributes the variants of a task set to targets; hands events to ``event_handler``."""

    def __init__(
        self,
        destinations: Any = None,
        port: int = 3001,
        session_class: Any = None,
        starter_threads: int = 20,
        **farm_options: Any,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError("port must be int")
        del starter_threads  # farm probes targets on its own schedule (rescan_interval)
        if isinstance(destinations, str):
            destinations = [destinations]
        config = farm_options.pop("config", None)
        if farm_options.get("backend") is not None or destinations is None:
            where: Any = config
            config = None
        else:
            where = [str(d) for d in destinations]
            farm_options.setdefault("agent_port", port)
        try:
            self._farm = FarmDistributor(where, config, session_class=session_class, **farm_options)
        except ConfigError as exc:
            raise ConfigError(f"taskgen Distributor: {exc}") from exc
        self.event_handler: Any = None

    @property
    def monitor(self) -> Any:
        """taskgen's other name of ``event_handler``."""
        return self.event_handler

    @monitor.setter
    def monitor(self, monitor: Any) -> None:
        self.event_handler = monitor

    @property
    def farm(self) -> FarmDistributor:
        """The farm Distributor doing the work."""
        return self._farm

    def start(self, taskset: Any, *session_params: Any, wait: bool = True) -> None:
        """Run every variant of ``taskset``; ``session_params`` go to each session's start."""
        if taskset is None or not hasattr(taskset, "variants"):
            raise TypeError("taskset must be TaskSet.")
        source = CompatSource(taskset.variants(), unique_name("taskgen", taskset))
        handler = self.event_handler
        monitor = handler if getattr(handler, "farm_native", False) else CompatMonitor(handler)
        self._farm.add_job(source, monitor, *session_params, name=source.name)
        if wait:
            self.wait_finished()

    def stop(self, wait: bool = True) -> None:
        """Stop every running set (reported stopped) and drop queued ones; targets stay."""
        self._farm.stop(wait=wait)

    def close(self, wait: bool = True) -> None:
        """Stop, then release every target and resource."""
        self._farm.close(wait=wait)

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._farm.wait_closed(timeout)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._farm.wait_finished(timeout)

    def wait_finished(self, timeout: float | None = None) -> bool:
        return self._farm.wait_finished(timeout)
