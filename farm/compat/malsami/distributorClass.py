"""The MaLSAMi Distributor (``distributor.distributorClass``) over farm's Distributor.

Its constructor keywords map onto farm's config: ``max_machine`` ->
``max_machines``, ``max_allowed`` -> ``machine_cap``, ``port`` ->
``agent_port``, ``set_tries`` -> ``set_tries``, ``timeout`` ->
``heartbeat_timeout``, ``bridge`` -> ``bridge_name``, ``logging_level`` -> the
level of the ``farm`` logger; ``startup_delay`` is accepted and not needed
(farm dials each guest until its agent answers, up to ``boot_timeout``).
``session_type`` "QemuSession" runs farm guests of the configured backend.
Farm's own keywords (``config=``, ``backend=``, ``session_class=``, config
keys) pass through; anything else is refused naming the accepted keywords.
"""

from __future__ import annotations

import logging
from typing import Any

from farm.compat.convert import CompatMonitor, CompatSource, unique_name
from farm.config import FarmConfig
from farm.core.distributor import Distributor as FarmDistributor
from farm.errors import ConfigError

log = logging.getLogger(__name__)

_SESSION_TYPES = ("QemuSession",)
_KEYS = {
    "max_machine": "max_machines",
    "max_allowed": "machine_cap",
    "port": "agent_port",
    "set_tries": "set_tries",
    "timeout": "heartbeat_timeout",
    "bridge": "bridge_name",
}
_FARM_KEYWORDS = frozenset({"config", "backend", "session_class"})


class Distributor:
    """Runs lists of task sets on farm guests; monitors get sets with ``task['jobs']``."""

    def __init__(
        self,
        max_machine: int = 1,
        max_allowed: int = 42,
        session_type: str = "QemuSession",
        logging_level: int = logging.DEBUG,
        bridge: str = "br0",
        port: int = 3001,
        startup_delay: float = 20,
        set_tries: int = 1,
        timeout: float = 40,
        **farm_options: Any,
    ) -> None:
        if session_type not in _SESSION_TYPES:
            raise ConfigError(
                f"session_type {session_type!r} is not supported by farm; use one of "
                f"{', '.join(_SESSION_TYPES)} (PandaSession boards: run farm on existing "
                "targets with taskgen's Distributor)"
            )
        given = {
            "max_machine": max_machine,
            "max_allowed": max_allowed,
            "port": port,
            "set_tries": set_tries,
            "timeout": timeout,
            "bridge": bridge,
        }
        overrides: dict[str, Any] = {_KEYS[k]: v for k, v in given.items()}
        unknown = sorted(set(farm_options) - _FARM_KEYWORDS - set(FarmConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"Distributor() got unknown keyword(s) {', '.join(unknown)}; MaLSAMi keywords: "
                "max_machine, max_allowed, session_type, logging_level, bridge, port, "
                "startup_delay, set_tries, timeout (or farm config keys)"
            )
        log.debug("startup_delay=%s not needed: farm dials until the agent answers", startup_delay)
        logging.getLogger("farm").setLevel(logging_level)
        self.logging_level = logging_level
        self.max_allowed_machines = max_allowed
        config = farm_options.pop("config", None)
        overrides.update(farm_options)
        self._farm = FarmDistributor(config, **overrides)

    @property
    def farm(self) -> FarmDistributor:
        """The farm Distributor doing the work."""
        return self._farm

    def add_job(
        self,
        tasksetList: Any,
        monitor: Any = None,
        offset: int = 0,
        *session_params: Any,
        is_list: bool | None = None,
    ) -> None:
        """Queue a list of task sets (or, ``is_list=False``, the variants of one set).

        ``offset`` sets are skipped from the head; an offset beyond the end adds
        nothing (logged as an error, as the original did). Each listed set runs
        once per variant (a set without ranges: once).
        """
        if monitor is not None and not any(
            hasattr(monitor, h) for h in ("__taskset_start__", "__taskset_finish__")
        ):
            raise TypeError("monitor must be of type AbstractMonitor")
        if is_list is None:
            is_list = isinstance(tasksetList, list | tuple)
        if is_list:
            items = list(tasksetList)
            for elem in items:
                if not hasattr(elem, "variants"):
                    raise TypeError(f"tasksets must be of type TaskSet, got {type(elem).__name__}")
            size = len(items)
            sets: Any = (v for elem in items[offset:] for v in elem.variants())
        else:
            if tasksetList is None or not hasattr(tasksetList, "variants"):
                raise TypeError("taskset must be of type TaskSet.")
            variants = list(tasksetList.variants())
            size = len(variants)
            sets = iter(variants[offset:])
        if offset >= size:
            log.error(
                "offset %d not below the number of task sets (%d): no job added", offset, size
            )
            return
        first = items[0] if is_list else tasksetList
        source = CompatSource(sets, unique_name("malsami", first))
        mon = monitor if getattr(monitor, "farm_native", False) else CompatMonitor(monitor)
        self._farm.add_job(source, mon, *session_params, name=source.name)
        log.info("a new job of size %d was added, offset was %d", size, offset)

    def get_distributor_state(self) -> bool:
        """True while sets are queued or running, or machines are up."""
        return self._farm.get_distributor_state()

    def get_max_machine_value(self) -> int:
        return self._farm.get_max_machine_value()

    def set_max_machine_value(self, new_value: int) -> None:
        """Change the machine limit; above ``max_allowed`` it is set to ``max_allowed`` (logged)."""
        if isinstance(new_value, bool) or not isinstance(new_value, int) or new_value <= 0:
            raise ValueError("The new max_machine value is not an integer greater than zero.")
        if new_value > self.max_allowed_machines:
            log.info(
                "max machine value %d is above max_allowed %d: set to %d",
                new_value,
                self.max_allowed_machines,
                self.max_allowed_machines,
            )
            new_value = self.max_allowed_machines
        self._farm.set_max_machine_value(new_value)

    def kill_all_machines(self) -> None:
        """Destroy every machine now; running sets are re-queued. Pauses until ``resume()``."""
        self._farm.kill_all_machines()

    def shut_down_all_machines(self) -> None:
        """Let each machine finish its set, then shut it down (pauses until ``resume()``)."""
        self._farm.shut_down_all_machines(wait=False)

    def resume(self) -> None:
        """Un-pause after a kill or shut-down: machines start again for the queued sets."""
        self._farm.set_max_machine_value(self._farm.get_max_machine_value())

    def close(self) -> None:
        """Stop everything and release farm's resources (farm addition)."""
        self._farm.close()
