"""farm: QEMU virtual-machine farm manager for real-time task-set experiments.

Public API (imported lazily, so ``python -m farm.agent`` stays light)::

    from farm import Distributor, FarmConfig, Task, TaskSet, BlockTaskSet
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Distributor": "farm.core.distributor",
    "FarmConfig": "farm.config",
    "Task": "farm.taskset",
    "TaskSet": "farm.taskset",
    "BlockTaskSet": "farm.taskset",
    "Event": "farm.events",
    "EventType": "farm.events",
    "FarmError": "farm.errors",
    "AbstractMonitor": "farm.monitors",
    "AbstractSession": "farm.session",
    "FarmSession": "farm.session",
}

__all__ = [  # noqa: RUF022 - same order as _EXPORTS
    "Distributor",
    "FarmConfig",
    "Task",
    "TaskSet",
    "BlockTaskSet",
    "Event",
    "EventType",
    "FarmError",
    "AbstractMonitor",
    "AbstractSession",
    "FarmSession",
]

if TYPE_CHECKING:
    from farm.config import FarmConfig
    from farm.core.distributor import Distributor
    from farm.errors import FarmError
    from farm.events import Event, EventType
    from farm.monitors import AbstractMonitor
    from farm.session import AbstractSession, FarmSession
    from farm.taskset import BlockTaskSet, Task, TaskSet


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'farm' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
