"""Monitors: receive every task set's start, events, finish, stop and give-up.

Shipped: LoggingMonitor (log/monitor.log), CsvMonitor (events.csv),
SqliteMonitor (results.db, the embedded results store), PostgresMonitor (the
same tables in a PostgreSQL database that several farms share), FanoutMonitor
(several at once). MonitorThread serialises one monitor's calls on its own thread.
``resolve(name)`` finds a monitor class by name, ``available()`` lists them.
"""

from __future__ import annotations

from farm.monitors.base import (
    AbstractMonitor,
    taskset_job,
    taskset_label,
    taskset_replaces_finish,
    taskset_variant,
)
from farm.monitors.csvfile import CsvMonitor
from farm.monitors.fanout import FanoutMonitor
from farm.monitors.logfile import LoggingMonitor
from farm.monitors.postgres import PostgresMonitor
from farm.monitors.sqlite import FINISHED_NOT_ONCE, SqliteMonitor
from farm.monitors.thread import MonitorThread
from farm.session.registry import first_doc_line, resolve_class

HOOKS = (
    "__taskset_start__",
    "__taskset_event__",
    "__taskset_finish__",
    "__taskset_stop__",
    "__taskset_bad__",
)
"""The monitor hooks, in life-cycle order."""

MONITORS: dict[str, type[AbstractMonitor]] = {
    cls.__name__: cls
    for cls in (LoggingMonitor, CsvMonitor, SqliteMonitor, PostgresMonitor, FanoutMonitor)
}


def resolve(name: str) -> type[AbstractMonitor]:
    """Monitor class for ``"SqliteMonitor"``, ``"monitors.CsvMonitor"`` or ``"module:Class"``."""
    return resolve_class(name, MONITORS, AbstractMonitor, __name__, accept=_duck_monitor)


def _duck_monitor(cls: type) -> bool:
    """Monitors need not subclass AbstractMonitor (taskgen's did not); hooks suffice."""
    return any(hasattr(cls, hook) for hook in HOOKS)


def available() -> list[tuple[str, str]]:
    """(name, first docstring line) of every shipped monitor class."""
    return [(name, first_doc_line(cls)) for name, cls in sorted(MONITORS.items())]


__all__ = [
    "FINISHED_NOT_ONCE",
    "HOOKS",
    "MONITORS",
    "AbstractMonitor",
    "CsvMonitor",
    "FanoutMonitor",
    "LoggingMonitor",
    "MonitorThread",
    "PostgresMonitor",
    "SqliteMonitor",
    "available",
    "resolve",
    "taskset_job",
    "taskset_label",
    "taskset_replaces_finish",
    "taskset_variant",
]
